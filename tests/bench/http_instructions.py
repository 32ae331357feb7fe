#!/usr/bin/python3
"""Instructions per HTTP request, counted by callgrind: repeatable on this
shared, noisy machine where requests/s are not. Each medusad given runs one
worker under valgrind --tool=callgrind; one keep-alive client sends SMALL
then LARGE requests for a path (on fresh servers), and the difference of the
two totals over LARGE - SMALL is the cost of one request, start-up excluded.

    tests/bench/http_instructions.py build/medusad [OTHER/medusad ...]

Needs valgrind. Not a test: nothing asserts.
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

SMALL, LARGE = 2000, 12000
PATHS = [("1 KiB file, keep-alive", "/1k.bin"), ("404, keep-alive", "/missing"),
         ("1 KiB file, a connection each", "close:/1k.bin")]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def requests(port, path, n):
    for _ in range(100):
        try:
            s = socket.create_connection(("127.0.0.1", port))
            break
        except OSError:
            time.sleep(0.1)
    if path.startswith("close:"):  # accept, one request, close: n times
        s.close()
        req = b"GET " + path[6:].encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        for _ in range(n):
            with socket.create_connection(("127.0.0.1", port)) as c:
                c.sendall(req)
                while c.recv(65536):
                    pass
        return
    req = b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    buf = b""
    for _ in range(n):
        s.sendall(req)
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                length = [int(line.split(b":")[1]) for line in buf[:end].split(b"\r\n")
                          if line.lower().startswith(b"content-length")][0]
                if len(buf) >= end + 4 + length:
                    buf = buf[end + 4 + length:]
                    break
            buf += s.recv(65536)
    s.close()


def instructions(medusad, conf, port, path, n, out):
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "-q", "--callgrind-out-file=" + out,
                          medusad, "-c", conf, "-w", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    requests(port, path, n)
    p.terminate()
    p.wait(60)
    with open(out) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("no totals in " + out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("medusad", nargs="+")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is missing: apt-get install valgrind")
    tmp = tempfile.mkdtemp(prefix="medusa-callgrind-")
    os.makedirs(os.path.join(tmp, "www"))
    with open(os.path.join(tmp, "www", "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    port = free_port()
    conf = os.path.join(tmp, "medusa.conf")
    with open(conf, "w") as f:
        f.write('allow_root = true;\nlog = { level = "warn"; error_log = "error.log"; };\n'
                'http = ( { name = "web"; listen = [ "127.0.0.1:%d" ]; keepalive_requests = 1000000;\n'
                ' vhosts = ( { names = [ "*" ]; handlers = ( { type = "static"; path = "/"; '
                'root = "www"; gzip_static = false; } ); } ); } );\n' % port)
    print("| scenario | " + " | ".join(args.medusad) + " |")
    print("|---|" + "---|" * len(args.medusad))
    for name, path in PATHS:
        row = []
        for binary in args.medusad:
            small = instructions(binary, conf, port, path, SMALL, os.path.join(tmp, "s.out"))
            large = instructions(binary, conf, port, path, LARGE, os.path.join(tmp, "l.out"))
            row.append("{:,}".format((large - small) // (LARGE - SMALL)))
        print("| %s | %s |" % (name, " | ".join(row)), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
