#!/usr/bin/python3
"""Slowloris and slow readers against HTTP, FTP and chat at once, while
normal clients (http.client, ftplib, a chat pair) keep being served.

An attacker process (this script with --attacker) holds --conns connections
per protocol: HTTP request heads trickled a byte per --interval seconds
(reconnected when the server times them out with 408), FTP commands
trickled byte by byte, chat nicknames trickled byte by byte, and chat users
that joined and trickle a line while never reading; plus slow readers that
never read a large response: HTTP GETs of a 4 MiB file and FTP RETRs of
one over a data connection nobody reads. Meanwhile normal clients measure
each operation: an HTTP GET on a new connection, an FTP session (login,
RETR of a small file over PASV, QUIT), and a chat line from one user to
another. Every operation must succeed, their p99 latency stay under --p99
seconds (generous: the machine is shared), and after the attackers go the
server's descriptors and RSS come back close to the baseline.

    tests/stress/slow_clients.py build/medusad [--conns 3000] [--seconds 60] [--rounds 2] [--p99 2]

RSS: glibc keeps the heap it grew to at the peak, so after the attackers go
RSS stays near its peak rather than the baseline; what is checked is that it
does not grow from one round of attack to the next (a leak would).
"""
import argparse
import ftplib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import stresslib
from stresslib import Checks, harness

BIG = 4 << 20


def conf(d, hport, fport, cport):
    os.makedirs(os.path.join(d, "www"))
    os.makedirs(os.path.join(d, "ftp"))
    with open(os.path.join(d, "www", "index.html"), "w") as f:
        f.write("hello\n")
    big = os.urandom(1 << 20) * (BIG >> 20)
    for p in (os.path.join(d, "www", "big.bin"), os.path.join(d, "ftp", "big.bin")):
        with open(p, "wb") as f:
            f.write(big)
    with open(os.path.join(d, "ftp", "small.txt"), "w") as f:
        f.write("small file\n")
    lo = 40000 + (os.getpid() % 80) * 100
    return ('workers = 2;\n'
            'http = ( { name = "web"; listen = [ "127.0.0.1:%d" ];\n'
            '  vhosts = ( { names = [ "*" ]; handlers = ( { type = "static"; path = "/"; root = "www"; } ); } ); } );\n'
            'ftp = ( { name = "ftp"; listen = [ "127.0.0.1:%d" ]; root = "ftp"; anonymous = true;\n'
            '  max_sessions_per_ip = 0; passive_ports = [ %d, %d ]; } );\n'
            'chat = ( { name = "chat"; listen = [ "127.0.0.1:%d" ]; } );\n'
            % (hport, fport, lo, lo + 1999, cport))


# ---- the attacker process ----

class Slot:
    """One hostile connection: what it sends at once, then what it trickles."""

    def __init__(self, kind, port, first, trickle, rcvbuf=None):
        self.kind, self.port, self.first, self.trickle, self.rcvbuf = kind, port, first, trickle, rcvbuf
        self.sock, self.pos, self.opened = None, 0, 0

    def open(self):
        self.sock = stresslib.nonblocking_connect(self.port, rcvbuf=self.rcvbuf)
        self.pos = -1  # the first bytes not sent yet
        self.opened += 1

    def step(self):
        """Sends the next byte (or the first bytes); False when the server
        closed the connection (it is then opened again)."""
        try:
            if self.pos < 0:
                self.sock.send(self.first)
                self.pos = 0
            elif self.trickle:
                self.sock.send(self.trickle[self.pos % len(self.trickle):][:1])
                self.pos += 1
            return True
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as e:
            if e.errno in (107,):  # ENOTCONN: still connecting
                return True
            return False


def attacker(args):
    stresslib.raise_nofile()
    n = args.conns
    slots = []
    for i in range(n):  # HTTP: heads trickled; a tenth are slow readers
        if i % 10 == 9:
            slots.append(Slot("http-read", args.hport,
                              b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n", b"", rcvbuf=4096))
        else:
            slots.append(Slot("http-loris", args.hport, b"GET / HTTP/1.1\r\nHost: x\r\n",
                              b"X-Loris-%d: " % i + b"a" * 200))
    for i in range(n):  # FTP: a command trickled
        slots.append(Slot("ftp-loris", args.fport, b"US", b"ER anonymous" + b"x" * 100))
    for i in range(n):  # chat: nicknames trickled; a fifth joined and trickle a line
        if i % 5 == 4:
            slots.append(Slot("chat-line", args.cport, b"loris%d\r\n" % i,
                              b"a line trickled byte by byte " * 20, rcvbuf=4096))
        else:
            slots.append(Slot("chat-nick", args.cport, b"lo", b"ris" + b"z" * 20))
    # FTP slow readers: RETR over a data connection that is never read.
    ftp_readers = []

    def ftp_reader():
        try:
            f = ftplib.FTP()
            f.connect("127.0.0.1", args.fport, timeout=20)
            f.login()
            f.voidcmd("TYPE I")
            conn = f.transfercmd("RETR big.bin")
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            ftp_readers.append((f, conn))
        except (OSError, ftplib.Error) as e:
            print("attacker: ftp slow reader: %s" % e, file=sys.stderr)

    stop = [False]
    signal.signal(signal.SIGTERM, lambda *a: stop.__setitem__(0, True))
    for k, s in enumerate(slots):  # in batches: the accept queues are 511 deep
        s.open()
        if k % 250 == 249:
            time.sleep(0.05)
    for _ in range(max(1, n // 30)):
        ftp_reader()
    print(json.dumps({"ready": len(slots), "ftp_readers": len(ftp_readers)}), flush=True)
    reopened = 0
    end = time.monotonic() + args.seconds + 30
    while not stop[0] and time.monotonic() < end:
        t = time.monotonic()
        for s in slots:
            if not s.step():
                s.sock.close()
                s.open()
                reopened += 1
        time.sleep(max(0.0, args.interval - (time.monotonic() - t)))
    kinds = {}
    for s in slots:
        kinds[s.kind] = kinds.get(s.kind, 0) + s.opened
    print(json.dumps({"opened": kinds, "reopened": reopened, "ftp_readers": len(ftp_readers)}),
          flush=True)
    for s in slots:
        s.sock.close()
    for f, conn in ftp_readers:
        conn.close()
        f.close()


# ---- the normal clients ----

def http_client(port, until, lat, fails):
    while time.monotonic() < until:
        t = time.monotonic()
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            c.request("GET", "/")
            r = c.getresponse()
            body = r.read()
            c.close()
            if r.status != 200 or body != b"hello\n":
                fails.append("http: %d %r" % (r.status, body[:50]))
        except Exception as e:  # noqa: BLE001 - every failure counts
            fails.append("http: %s: %s" % (type(e).__name__, e))
        lat.append(time.monotonic() - t)
        time.sleep(0.05)


def ftp_client(port, until, lat, fails):
    while time.monotonic() < until:
        t = time.monotonic()
        try:
            f = ftplib.FTP()
            f.connect("127.0.0.1", port, timeout=20)
            f.login()
            chunks = []
            f.retrbinary("RETR small.txt", chunks.append)
            f.quit()
            if b"".join(chunks) != b"small file\n":
                fails.append("ftp: got %r" % b"".join(chunks)[:50])
        except Exception as e:  # noqa: BLE001
            fails.append("ftp: %s: %s" % (type(e).__name__, e))
        lat.append(time.monotonic() - t)
        time.sleep(0.1)


def chat_client(port, until, lat, fails):
    try:
        a, b = harness.ChatClient(("127.0.0.1", port), 20), harness.ChatClient(("127.0.0.1", port), 20)
        a.join("normal_a")
        b.join("normal_b")
    except Exception as e:  # noqa: BLE001
        fails.append("chat join: %s: %s" % (type(e).__name__, e))
        return
    i = 0
    while time.monotonic() < until:
        t = time.monotonic()
        try:
            a.send_line("ping %d" % i)
            while True:  # skip the room's notices (joins of the attackers)
                line = b.line(timeout=20)
                if not line.startswith("["):
                    break
            if line != "normal_a: ping %d" % i:
                fails.append("chat: %r" % line)
        except Exception as e:  # noqa: BLE001
            fails.append("chat: %s: %s" % (type(e).__name__, e))
            break
        lat.append(time.monotonic() - t)
        i += 1
        time.sleep(0.05)
    a.close()
    b.close()


def attack_round(args, chk, srv, hport, fport, cport, fds0):
    att = subprocess.Popen([sys.executable, os.path.abspath(__file__), args.medusad, "--attacker",
                            "--conns", str(args.conns), "--seconds", str(args.seconds),
                            "--interval", str(args.interval), "--hport", str(hport),
                            "--fport", str(fport), "--cport", str(cport)],
                           stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(att.stdout.readline() or "{}")
        print("attacker ready:", ready)
        chk.check(ready.get("ready") == 3 * args.conns, "attacker holds %s hostile connections"
                  % ready.get("ready"))
        time.sleep(3)  # let the trickle reach the server
        peak_fds, peak_rss = srv.fds(), srv.rss()
        lats = {"http": [], "ftp": [], "chat": []}
        fails = []
        until = time.monotonic() + args.seconds
        threads = [threading.Thread(target=fn, args=(port, until, lats[k], fails))
                   for k, fn, port in (("http", http_client, hport), ("ftp", ftp_client, fport),
                                       ("chat", chat_client, cport))]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak_fds, peak_rss = max(peak_fds, srv.fds()), max(peak_rss, srv.rss())
            time.sleep(1)
        for t in threads:
            t.join()
        print("medusad under load: up to %d descriptors, %d KiB RSS" % (peak_fds, peak_rss))
        chk.check(peak_fds > fds0 + 2 * args.conns,
                  "the hostile connections reached the server (%d descriptors)" % peak_fds)
        for k, v in lats.items():
            print("normal %-4s clients: %s" % (k, stresslib.lat_text(v)))
            chk.check(len(v) >= 5, "normal %s clients made %d operations" % (k, len(v)))
            if v:
                chk.check(stresslib.pct(v, 99) < args.p99, "normal %s clients: p99 %.0f ms < %.0f ms"
                          % (k, stresslib.pct(v, 99) * 1000, args.p99 * 1000))
        chk.check(not fails, "no normal client operation failed (%d failures: %s)"
                  % (len(fails), fails[:5]))
    finally:
        att.send_signal(signal.SIGTERM)
        try:
            out, _ = att.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            att.kill()
            out, _ = att.communicate()
    print("attacker:", out.strip())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("medusad")
    ap.add_argument("--conns", type=int, default=3000, help="hostile connections per protocol")
    ap.add_argument("--seconds", type=float, default=60,
                    help="how long the normal clients run in each round")
    ap.add_argument("--rounds", type=int, default=2,
                    help="attacks one after the other (RSS must not grow between them)")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between trickled bytes")
    ap.add_argument("--p99", type=float, default=2.0, help="bound on normal clients' p99 latency (s)")
    ap.add_argument("--attacker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--hport", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--fport", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--cport", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.attacker:
        attacker(args)
        return 0
    stresslib.use(args.medusad)
    chk = Checks("slow_clients")
    d = harness.temp_dir()
    hport, fport, cport = (harness.free_port() for _ in range(3))
    srv = stresslib.Server(conf(d, hport, fport, cport), dir=d)
    time.sleep(1)
    fds0, rss0 = stresslib.settle(srv), srv.rss()
    print("baseline: %d descriptors, %d KiB RSS" % (fds0, rss0))
    after = []
    for rnd in range(args.rounds):
        print("== round %d of %d" % (rnd + 1, args.rounds), flush=True)
        attack_round(args, chk, srv, hport, fport, cport, fds0)
        chk.check(srv.proc.poll() is None, "medusad alive")
        # Descriptors come back; RSS is what glibc keeps after the peak (it
        # does not give freed heap back), so it must not grow round after round.
        fds, rss = stresslib.back_to_baseline(chk, srv, fds0, rss0, timeout=30, rss_check=False)
        after.append(rss)
    print("RSS after each round: %s KiB (baseline %d KiB)" % (after, rss0))
    if len(after) > 1:
        chk.check_rss(after[-1] <= after[0] * 1.05 + 4096, "RSS does not grow from round to round: "
                  "%d KiB after the first, %d KiB after the last" % (after[0], after[-1]))
    chk.check(srv.stop() == 0, "medusad stops cleanly (exit 0)")
    return chk.report(srv)


if __name__ == "__main__":
    sys.exit(main())
