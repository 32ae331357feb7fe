#!/usr/bin/python3
"""A bounded black-box fuzz run against a real medusad, one server with
every service, in one or all of its modes:

  http     every handler type behind one virtual host (the proxy's with
           tests/integration/backend.py); mutated requests (bytes flipped,
           inserted, deleted, cut; '%', '..', NUL, CRLF, huge numbers
           spliced in); each answer must be HTTP or a close
  ftp      tests/fuzz/ftp_storm.py's sessions (random verbs and arguments,
           garbage, data connections opened, fed, dropped); every line an
           FTP reply
  chat     mutated nicknames, lines and commands (over-long, control
           characters, bad UTF-8, bare CR or LF, cut); every line the
           server sends a prompt, a notice, a join/leave or 'nick: text'
  console  the admin console over TCP: mutated lines before
           authentication, and after an operator login (read-only level),
           mutated commands; every reply a 'STATUS LENGTH' frame with a
           known status, or a close

8 threads per mode. Run it against a sanitizer build; any report in the
server's stderr, a malformed answer or a dead server is a finding.

    tests/fuzz/http_storm.py build-asan/medusad [--mode http|ftp|chat|console|all] [--seconds 90] [--seed 1]

--seconds is per mode. Not part of the suite as such (the test twins, with
fixed seeds, are the mutation storms in tests/integration/test_http_protocol.py
and test_ftp.py); the suite runs a short `--mode all` of it in the plain build
(ctest: fuzz_storm).
"""
import argparse
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import sys
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
    return mutate_with(rng, d, SPLICES)


def free_ports(n):
    """n different free ports: each socket is held until all are chosen."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


CHAT_TEMPLATES = [b"alice\r\n", b"bob\r\nhello everyone\r\n", b"carol\r\n/who\r\n/help\r\n",
                  b"dave\r\n/quit\r\n", b"eve\r\n/nick x\r\n/me waves\r\n",
                  b"fred\r\n" + b"long " * 400 + b"\r\nafter\r\n",
                  b"gina\r\ntab\there\r\n\xc3\xa9t\xc3\xa9\r\n", b"hal\nbare lf\nbare\rcr\r\n",
                  b"ivy\r\n\x00\x01\x1b[31mred\r\n", b"\xff\xfe\r\n", b"  \r\n", b"nick with space\r\n"]
CHAT_SPLICES = [b"\r\n", b"\n", b"\r", b"\x00", b"\xff", b"/", b"/who", b":", b" ", b"\xc3",
                b"A" * 2000]
CHAT_LINE = re.compile(rb"^(nickname\?: )*(\* .*|\[.+ (joined|left)\]|[^ :]+: .*)$", re.S)
CONSOLE_TEMPLATES = [b"help\n", b"stats\n", b"stats json\n", b"workers\n", b"workers json\n",
                     b"conns\n", b"conns 1 web json\n", b"listeners json\n", b"info\n",
                     b"config\n", b"log tail 5\n", b"chat who\n", b"http servers\n",
                     b"upstreams json\n", b"workers set 2\n", b"kill 999999\n", b"quit\n"]
CONSOLE_SPLICES = [b"\n", b"\r\n", b"\x00", b" ", b"json", b"99999999999999999999", b"-1",
                   b"\xff", b"A" * 9000, b"%s%n"]
OPERATOR_SECRET = "storm-operator-secret-0123456789"


def mutate_with(rng, d, splices):
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
            d[pos:pos] = rng.choice(splices)
        else:
            d = d[:pos]
    return bytes(d)


def read_all(s, timeout):
    s.settimeout(timeout)
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            got += chunk
    except socket.timeout:
        pass
    return got


def http_case(rng, port, findings):
    d = b"".join(mutate(rng, rng.choice(TEMPLATES)) for _ in range(rng.choice([1, 1, 2, 3])))
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.sendall(d)
    if rng.random() < 0.7:
        s.shutdown(socket.SHUT_WR)
    got = read_all(s, 3)
    s.close()
    if got and not got.startswith(b"HTTP/1.1 "):
        findings.append(("http: not HTTP", got[:40], d))


def chat_case(rng, port, findings):
    d = b"".join(mutate_with(rng, rng.choice(CHAT_TEMPLATES), CHAT_SPLICES)
                 for _ in range(rng.choice([1, 2, 3])))
    s = socket.create_connection(("127.0.0.1", port), 5)
    step = rng.choice([len(d) or 1, len(d) or 1, 1, 7])  # at once, or trickled in pieces
    for k in range(0, len(d), step):
        s.sendall(d[k:k + step])
    if rng.random() < 0.5:
        s.shutdown(socket.SHUT_WR)
    got = read_all(s, 0.5)
    s.close()
    for line in got.split(b"\r\n")[:-1]:  # the last may be cut, or the prompt
        if not CHAT_LINE.match(line):
            findings.append(("chat: not a chat line", line[:80], d[:200]))


def console_frames(data):
    """Parses STATUS LENGTH frames; returns the problem or None (a cut
    last frame is fine: the connection may close at any time)."""
    while data:
        head, nl, rest = data.partition(b"\n")
        if not nl:
            return None if re.match(rb"^\d{0,3}( \d*)?$", head) else "bad head %r" % head[:40]
        m = re.match(rb"^(200|400|401|500) (\d+)$", head)
        if not m:
            return "bad head %r" % head[:60]
        n = int(m.group(2))
        if len(rest) < n:
            return None
        data = rest[n:]
    return None


def console_case(rng, port, findings):
    import hashlib
    import hmac
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.settimeout(3)
    buf = b""
    while b"\n" not in buf or len(buf.partition(b"\n")[2]) < 64:
        chunk = s.recv(4096)
        if not chunk:
            findings.append(("console: closed before the challenge", buf, b""))
            return
        buf += chunk
    head, _, rest = buf.partition(b"\n")
    challenge, buf = rest[:64], rest[64:]
    sent = b""
    if rng.random() < 0.6:  # an operator: mutated read-only (and refused) commands
        mac = hmac.new(OPERATOR_SECRET.encode(), challenge, hashlib.sha256).hexdigest()
        sent = b"auth " + mac.encode() + b"\n"
    sent += b"".join(mutate_with(rng, rng.choice(CONSOLE_TEMPLATES), CONSOLE_SPLICES)
                     for _ in range(rng.randint(1, 4)))
    try:
        s.sendall(sent)
        if rng.random() < 0.5:
            s.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    got = buf + read_all(s, 1.5)
    s.close()
    why = console_frames(got)
    if why:
        findings.append(("console: " + why, got[:120], sent[:200]))


def run_mode(mode, args, ports, srv, findings, counts):
    import ftp_storm
    rng0 = random.Random(args.seed * 1000 + hash(mode) % 1000)
    end = time.time() + args.seconds

    def worker(seed):
        rng = random.Random(seed)
        while time.time() < end and srv.poll() is None:
            try:
                if mode == "http":
                    http_case(rng, ports["http"], findings)
                elif mode == "chat":
                    chat_case(rng, ports["chat"], findings)
                elif mode == "console":
                    console_case(rng, ports["console"], findings)
                else:
                    problems = []
                    ftp_storm.session(ports["ftp"], rng, problems)
                    findings.extend(("ftp: not an FTP reply", p, b"") for p in problems)
            except (ConnectionResetError, BrokenPipeError, socket.timeout):
                pass
            except ConnectionRefusedError:
                findings.append(("%s: server gone" % mode, b"", b""))
                return
            counts[mode] = counts.get(mode, 0) + 1

    threads = [threading.Thread(target=worker, args=(rng0.random(),)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("medusad")
    ap.add_argument("--mode", choices=["http", "ftp", "chat", "console", "all"], default="http")
    ap.add_argument("--seconds", type=int, default=90, help="per mode")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import ftp_storm
    tmp = tempfile.mkdtemp(prefix="medusa-storm-")
    ports = dict(zip(("http", "ftp", "chat", "console", "backend"), free_ports(5)))
    port = ports["http"]
    os.makedirs(os.path.join(tmp, "www"))
    os.makedirs(os.path.join(tmp, "up"))
    with open(os.path.join(tmp, "www", "a.txt"), "w") as f:
        f.write("hello\n")
    hashed = subprocess.run(["openssl", "passwd", "-6", "secret"], capture_output=True,
                            text=True, check=True).stdout.strip()
    with open(os.path.join(tmp, "users"), "w") as f:
        f.write("alice:%s\n" % hashed)
    ftp_storm.make_root(tmp)
    hashed_p = subprocess.run(["openssl", "passwd", "-6", "p"], capture_output=True,
                              text=True, check=True).stdout.strip()
    with open(os.path.join(tmp, "ftpusers"), "w") as f:
        f.write("u:%s::read,write,delete,mkdir,rename\n" % hashed_p)
    for name, text in (("admin.secret", "storm-admin-secret-never-used-0123"),
                       ("operator.secret", OPERATOR_SECRET)):
        with open(os.path.join(tmp, name), "w") as f:
            f.write(text + "\n")
        os.chmod(os.path.join(tmp, name), 0o600)
    bport = ports["backend"]
    backend = subprocess.Popen(["/usr/bin/python3", os.path.join(os.path.dirname(
        os.path.abspath(__file__)), "..", "integration", "backend.py"), str(bport), "b"],
        stdout=subprocess.PIPE)
    backend.stdout.readline()
    base = random.Random(args.seed).randrange(40000, 48000, 100)
    with open(os.path.join(tmp, "m.conf"), "w") as f:
        f.write("""workers = 2;
allow_root = true;
upstreams = ( { name = "app"; servers = [ "127.0.0.1:%d" ]; read_timeout = 3; } );
log = { level = "warn"; error_log = "err.log"; };
admin = { listen = [ "127.0.0.1:%d" ]; secret = "admin.secret"; operator_secret = "operator.secret"; };
http = ( { name = "w"; listen = [ "127.0.0.1:%d" ]; max_body = 10000;
  header_timeout = 2; body_timeout = 2;
  vhosts = ( { names = ["*"]; handlers = (
    { type = "status"; path = "/status"; },
    { type = "redirect"; path = "/r/"; pattern = "^/r/([a-z]+)$"; to = "/x/$1"; status = 302; },
    { type = "auth"; path = "/p/"; users = "users"; },
    { type = "put"; path = "/up/"; root = "up"; },
    { type = "proxy"; path = "/api/"; upstream = "app"; strip_prefix = true; tunnel_timeout = 2; },
    { type = "static"; path = "/"; root = "www"; listing = true; } ); } ); } );
ftp = ( { name = "f"; listen = [ "127.0.0.1:%d" ]; root = "ftp"; anonymous = true;
  anonymous_upload = "up"; users = "ftpusers"; passive_ports = [ %d, %d ];
  max_sessions_per_ip = 0; login_failure_delay = 0.01; data_timeout = 1; idle_timeout = 2; } );
chat = ( { name = "c"; listen = [ "127.0.0.1:%d" ]; max_line = 512; idle_timeout = 2; } );
""" % (bport, ports["console"], port, ports["ftp"], base, base + 299, ports["chat"]))
    err = open(os.path.join(tmp, "stderr"), "w")
    srv = subprocess.Popen([os.path.abspath(args.medusad), "-c", os.path.join(tmp, "m.conf")],
                           stderr=err, env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1"))
    time.sleep(1)
    findings, counts = [], {}
    modes = ["http", "ftp", "chat", "console"] if args.mode == "all" else [args.mode]
    for mode in modes:
        if srv.poll() is not None:
            break
        run_mode(mode, args, ports, srv, findings, counts)
        print("%s: %d cases" % (mode, counts.get(mode, 0)), flush=True)
    alive = srv.poll() is None
    if alive:
        srv.send_signal(signal.SIGTERM)
        srv.wait(30)
    err.close()
    backend.kill()
    backend.wait()
    reports = open(os.path.join(tmp, "stderr"), errors="replace").read()
    print("%s cases, %d findings, server %s, exit %s" %
          (", ".join("%s %d" % kv for kv in counts.items()), len(findings),
           "alive" if alive else "DEAD", srv.returncode))
    for f in findings[:8]:
        print("  ", f)
    sanitizer = "Sanitizer" in reports or "runtime error" in reports
    if sanitizer:
        print(reports[:4000])
    shutil.rmtree(tmp, ignore_errors=True)
    ok = alive and not findings and srv.returncode == 0 and not sanitizer
    print("storm: %d passed, %d failed" % (1 if ok else 0, 0 if ok else 1))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
