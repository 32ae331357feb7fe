#!/usr/bin/python3
"""A bounded black-box fuzz run against a real medusad's FTP service:
sessions of random verbs and arguments (paths with '..', NUL, CR, over-long
lines, Telnet bytes, PORT/EPRT targets, huge numbers), garbage bytes, data
connections opened, fed, read, dropped or reset, and sessions that end with
a reset. Every line the server sends must be an FTP reply ("DDD " or
"DDD-", or a multi-line body), or the connection must close. Run it
against a sanitizer build; any report in the server's stderr, a malformed
reply or a dead server is a finding.

    tests/fuzz/ftp_storm.py build-asan/medusad [--seconds 90] [--seed 1]

Not part of the suite (its test twin, with a fixed seed and 240 sessions,
is test_storm_of_mutated_sessions in tests/integration/test_ftp.py).
"""
import argparse
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

VERBS = ("USER PASS ACCT QUIT REIN NOOP SYST HELP STAT TYPE STRU MODE PORT PASV LIST NLST CWD "
         "CDUP PWD RETR STOR STOU APPE REST ABOR DELE MKD RMD RNFR RNTO ALLO SITE FEAT OPTS EPSV "
         "EPRT SIZE MDTM MLST MLSD XPWD XCUP").split()
ARGS = ["", "/", "..", "../..", "pub", "pub/f.bin", "pub/a.txt", "up/x", "x" * 5000, "\xff\xf4",
        "A N", "I", "E", "0", "-1", "99999999999999999999", "1,2,3,4,5,6", "127,0,0,1,4,1",
        "|1|127.0.0.1|1025|", "|2|::1|1|", "ALL", "1", "2", "UTF8 ON", "MLST type;",
        "CHMOD 777 pub", "CHMOD 4777 up", "HELP", "%s", "%n%n", "\x00", "new dir", "a\rb", "up",
        "pub/../../etc/passwd", "\xc3\xa9t\xc3\xa9"]
REPLY = re.compile(rb"^(\d\d\d[ -]| )")


def session(port, rng, problems):
    """One session; appends to problems what is not an FTP reply."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=1)
    except OSError:
        return
    buf = b""
    try:
        if rng.random() < 0.7:
            s.sendall(rng.choice([b"USER anonymous\r\nPASS x\r\n", b"USER u\r\nPASS p\r\n",
                                  b"USER u\r\nPASS bad\r\n"]))
        for _ in range(rng.randint(1, 40)):
            if rng.random() < 0.05:
                s.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 3000))))
            else:
                line = rng.choice(VERBS)
                if rng.random() < 0.8:
                    line += " " + rng.choice(ARGS)
                s.sendall(line.encode("latin-1") + rng.choice([b"\r\n", b"\n", b"\r\n", b""]))
            if rng.random() < 0.3:
                data = s.recv(65536)
                buf += data
                m = re.search(rb"\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)", data)
                m2 = re.search(rb"\(\|\|\|(\d+)\|\)", data)
                dport = (int(m.group(5)) * 256 + int(m.group(6)) if m
                         else int(m2.group(1)) if m2 else None)
                if dport and rng.random() < 0.7:
                    try:
                        d = socket.create_connection(("127.0.0.1", dport), timeout=2)
                        if rng.random() < 0.5:
                            d.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 70000))))
                        if rng.random() < 0.5:
                            d.recv(10000)
                        d.close()
                    except OSError:
                        pass
        if rng.random() < 0.5:  # end with a reset
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        else:
            s.settimeout(0.2)
            while True:
                data = s.recv(65536)
                if not data:
                    break
                buf += data
    except OSError:
        pass
    finally:
        s.close()
    lines = buf.split(b"\r\n")
    for line in lines[:-1]:  # the last may be cut
        if line and not REPLY.match(line) and not line.startswith((b"-", b"d", b"l", b"type=")):
            problems.append(line[:120])


def make_root(tmp):
    root = os.path.join(tmp, "ftp")
    os.makedirs(os.path.join(root, "pub"))
    os.makedirs(os.path.join(root, "up"))
    with open(os.path.join(root, "pub", "f.bin"), "wb") as f:
        f.write(os.urandom(300000))
    with open(os.path.join(root, "pub", "a.txt"), "w") as f:
        f.write("hello\n")
    return root


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("medusad")
    ap.add_argument("--seconds", type=int, default=90)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    import warnings
    with warnings.catch_warnings():  # deprecated, but the standard library's
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    tmp = tempfile.mkdtemp(prefix="medusa-ftpstorm-")
    make_root(tmp)
    with open(os.path.join(tmp, "users"), "w") as f:
        f.write("u:%s::read,write,delete,mkdir,rename\n"
                % crypt.crypt("p", crypt.mksalt(crypt.METHOD_SHA512)))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = random.Random(args.seed).randrange(40000, 48000, 100)
    with open(os.path.join(tmp, "medusa.conf"), "w") as f:
        f.write('workers = 2;\nallow_root = true;\nlog = { level = "warn"; error_log = "error.log"; };\n'
                'ftp = ( { name = "f"; listen = [ "127.0.0.1:%d" ]; root = "ftp"; anonymous = true;\n'
                ' anonymous_upload = "up"; users = "users"; passive_ports = [ %d, %d ];\n'
                ' max_sessions_per_ip = 0; login_failure_delay = 0.01; data_timeout = 1;\n'
                ' idle_timeout = 2; } );\n' % (port, base, base + 299))
    stderr = open(os.path.join(tmp, "stderr"), "w+")
    srv = subprocess.Popen([args.medusad, "-c", os.path.join(tmp, "medusa.conf")],
                           stderr=stderr, stdout=subprocess.DEVNULL)
    time.sleep(1)
    problems, n = [], 0
    end = time.time() + args.seconds
    rng = random.Random(args.seed)
    while time.time() < end and srv.poll() is None:
        threads = [threading.Thread(target=session,
                                    args=(port, random.Random(rng.random()), problems))
                   for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        n += 30
    alive = srv.poll() is None
    srv.send_signal(signal.SIGTERM)
    srv.wait(30)
    stderr.seek(0)
    report = stderr.read()
    print("%d sessions; server %s; exit %s; %d malformed replies"
          % (n, "alive" if alive else "DEAD", srv.returncode, len(problems)))
    for p in problems[:10]:
        print("  malformed:", p)
    if "Sanitizer" in report or "runtime error" in report:
        print(report[:5000])
    ok = alive and srv.returncode == 0 and not problems and "Sanitizer" not in report
    shutil.rmtree(tmp, True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
