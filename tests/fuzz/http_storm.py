#!/usr/bin/python3
"""A bounded black-box fuzz run against a real medusad: every handler type
behind one virtual host (the proxy's with tests/integration/backend.py), 8 threads sending mutated requests (bytes flipped,
inserted, deleted, cut; '%', '..', NUL, CRLF, huge numbers spliced in),
each answer checked to be HTTP or a close. Run it against a sanitizer build;
any report in the server's stderr, a non-HTTP answer or a dead server is a
finding.

    tests/fuzz/http_storm.py build-asan/medusad [--seconds 90] [--seed 1]

Not part of the suite (its test twin, with a fixed seed and 800 cases, is
the mutation storm in tests/integration/test_http_protocol.py).
"""
import argparse
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

TEMPLATES = [
    b"GET /a.txt HTTP/1.1\r\nHost: x\r\nRange: bytes=0-3\r\nIf-None-Match: \"x\"\r\n"
    b"Accept-Encoding: gzip;q=0.5\r\n\r\n",
    b"PUT /up/f.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
    b"PUT /up/g.bin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;a=b\r\nhello\r\n0\r\nT: x\r\n\r\n",
    b"GET /p/a.txt HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWxpY2U6c2VjcmV0\r\n\r\n",
    b"GET /r/abc?q=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /status.json HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /metrics HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET http://h:1/%2e/a.txt HTTP/1.1\r\nHost: y\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
    # through the reverse proxy (tests/integration/backend.py behind /api/)
    b"GET /api/echo?x=1 HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n"
    b"X-Forwarded-For: 1.2.3.4\r\nVia: 1.0 a\r\n\r\n",
    b"POST /api/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
    b"Expect: 100-continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"PUT /api/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"GET /api/big?n=70000&chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /api/big?n=7000 HTTP/1.0\r\n\r\n",
    b"GET /api/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n\x81\x85abcd\x09\x07\x0f\x08\x0e",
]
SPLICES = [b"%", b"%2f", b"..", b"/", b"\r\n", b":", b" ", b"\x00", b"%00", b"bytes=-",
           b"9999999999999999999"]


def mutate(rng, d):
    d = bytearray(d)
    for _ in range(rng.randint(1, 6)):
        if not d:
            break
        op, pos = rng.randint(0, 4), rng.randrange(len(d))
        if op == 0:
            d[pos] = rng.randrange(256)
        elif op == 1:
            d[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 2:
            del d[pos:pos + rng.randint(1, 16)]
        elif op == 3:
            d[pos:pos] = rng.choice(SPLICES)
        else:
            d = d[:pos]
    return bytes(d)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("medusad")
    ap.add_argument("--seconds", type=int, default=90)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="medusa-storm-")
    port = free_port()
    os.makedirs(os.path.join(tmp, "www"))
    os.makedirs(os.path.join(tmp, "up"))
    with open(os.path.join(tmp, "www", "a.txt"), "w") as f:
        f.write("hello\n")
    hashed = subprocess.run(["openssl", "passwd", "-6", "secret"], capture_output=True,
                            text=True, check=True).stdout.strip()
    with open(os.path.join(tmp, "users"), "w") as f:
        f.write("alice:%s\n" % hashed)
    bport = free_port()
    backend = subprocess.Popen(["/usr/bin/python3", os.path.join(os.path.dirname(
        os.path.abspath(__file__)), "..", "integration", "backend.py"), str(bport), "b"],
        stdout=subprocess.PIPE)
    backend.stdout.readline()
    with open(os.path.join(tmp, "m.conf"), "w") as f:
        f.write("""workers = 2;
allow_root = true;
upstreams = ( { name = "app"; servers = [ "127.0.0.1:%d" ]; read_timeout = 3; } );
log = { level = "warn"; error_log = "err.log"; };
http = ( { name = "w"; listen = [ "127.0.0.1:%d" ]; max_body = 10000;
  header_timeout = 2; body_timeout = 2;
  vhosts = ( { names = ["*"]; handlers = (
    { type = "status"; path = "/status"; },
    { type = "redirect"; path = "/r/"; pattern = "^/r/([a-z]+)$"; to = "/x/$1"; status = 302; },
    { type = "auth"; path = "/p/"; users = "users"; },
    { type = "put"; path = "/up/"; root = "up"; },
    { type = "proxy"; path = "/api/"; upstream = "app"; strip_prefix = true; tunnel_timeout = 2; },
    { type = "static"; path = "/"; root = "www"; listing = true; } ); } ); } );
""" % (bport, port))
    err = open(os.path.join(tmp, "stderr"), "w")
    srv = subprocess.Popen([os.path.abspath(args.medusad), "-c", os.path.join(tmp, "m.conf")],
                           stderr=err, env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1"))
    time.sleep(1)
    count, findings = [0], []

    def worker(seed):
        rng = random.Random(seed)
        end = time.time() + args.seconds
        while time.time() < end and srv.poll() is None:
            d = b"".join(mutate(rng, rng.choice(TEMPLATES)) for _ in range(rng.choice([1, 1, 2, 3])))
            try:
                s = socket.create_connection(("127.0.0.1", port), 5)
                s.sendall(d)
                if rng.random() < 0.7:
                    s.shutdown(socket.SHUT_WR)
                s.settimeout(3)
                got = b""
                try:
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        got += chunk
                except socket.timeout:
                    pass
                s.close()
                if got and not got.startswith(b"HTTP/1.1 "):
                    findings.append(("not HTTP", got[:40], d))
            except (ConnectionResetError, BrokenPipeError):
                pass
            except ConnectionRefusedError:
                findings.append(("server gone", b"", d))
                return
            count[0] += 1

    threads = [threading.Thread(target=worker, args=(args.seed * 100 + i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    alive = srv.poll() is None
    if alive:
        srv.send_signal(signal.SIGTERM)
        srv.wait(30)
    err.close()
    backend.kill()
    backend.wait()
    reports = open(os.path.join(tmp, "stderr"), errors="replace").read()
    print("%d requests, %d findings, server %s, exit %s" %
          (count[0], len(findings), "alive" if alive else "DEAD", srv.returncode))
    for f in findings[:5]:
        print("  ", f)
    if "ERROR" in reports or "runtime error" in reports:
        print(reports[:4000])
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if alive and not findings and srv.returncode == 0 and "ERROR" not in reports else 1


if __name__ == "__main__":
    raise SystemExit(main())
