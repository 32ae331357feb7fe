#!/usr/bin/python3
"""Descriptor exhaustion: medusad runs with a low RLIMIT_NOFILE (1024 by
default) and gets more client connections than it can hold, each sending a
partial request (so TCP_DEFER_ACCEPT hands it over) to HTTP, chat, FTP
and the admin console's TCP port, plus passive FTP data connections.
While the server is out of descriptors it must not spin (its CPU, read from
/proc/PID/stat, stays under --max-cpu of one core), the connections it
already holds (HTTP keep-alive, a chat pair, a logged-in FTP session) keep
being served, and once the flood goes the server recovers: new clients are
served and its descriptors and RSS return close to the baseline.

    tests/stress/fd_exhaustion.py build/medusad [--nofile 1024] [--conns 3000] [--hold 10]

The excess is not refused: like worker_connections, it waits in the kernel's
accept queues (and, past those, in SYN retries) until descriptors free up.
"""
import argparse
import ftplib
import http.client
import os
import sys
import time

import stresslib
from stresslib import Checks, CpuMeter, harness


def conf(d, hport, cport, fport, aport):
    os.makedirs(os.path.join(d, "www"))
    os.makedirs(os.path.join(d, "ftp"))
    with open(os.path.join(d, "www", "index.html"), "w") as f:
        f.write("hello\n")
    with open(os.path.join(d, "www", "big.bin"), "wb") as f:
        f.write(os.urandom(256 << 10))
    with open(os.path.join(d, "ftp", "f.txt"), "w") as f:
        f.write("ftp file\n")
    harness.write_secret(os.path.join(d, "admin.secret"), "s3cret-fd-0123456789abcdef")
    return (
        'workers = 2;\n'
        'admin = { listen = [ "unix:run/admin.sock", "127.0.0.1:%d" ]; secret = "admin.secret"; };\n'
        'http = ( { name = "web"; listen = [ "127.0.0.1:%d" ]; header_timeout = 60;\n'
        '  keepalive_timeout = 120;\n'
        '  vhosts = ( { names = [ "*" ]; handlers = ( { type = "status"; path = "/status"; },\n'
        '    { type = "static"; path = "/"; root = "www"; } ); } ); } );\n'
        'chat = ( { name = "chat"; listen = [ "127.0.0.1:%d" ]; } );\n'
        'ftp = ( { name = "ftp"; listen = [ "127.0.0.1:%d" ]; root = "ftp"; anonymous = true;\n'
        '  max_sessions_per_ip = 0; data_timeout = 20; } );\n' % (aport, hport, cport, fport))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("medusad")
    ap.add_argument("--nofile", type=int, default=1024, help="medusad's RLIMIT_NOFILE")
    ap.add_argument("--conns", type=int, default=3000, help="flood connections (all protocols)")
    ap.add_argument("--hold", type=float, default=10, help="seconds the flood is held")
    ap.add_argument("--max-cpu", type=float, default=0.30,
                    help="largest CPU share of one core medusad may use while exhausted")
    args = ap.parse_args()
    stresslib.use(args.medusad)
    chk = Checks("fd_exhaustion")
    d = harness.temp_dir()
    hport, cport, fport, aport = (harness.free_port() for _ in range(4))
    srv = stresslib.Server(conf(d, hport, cport, fport, aport), dir=d, admin=True,
                           nofile=args.nofile)
    time.sleep(1)
    fds0, rss0 = stresslib.settle(srv), srv.rss()
    print("baseline: %d descriptors, %d KiB RSS, RLIMIT_NOFILE %d" % (fds0, rss0, args.nofile))

    # Clients that are in before the flood.
    keep = [http.client.HTTPConnection("127.0.0.1", hport, timeout=10) for _ in range(4)]
    for c in keep:
        c.request("GET", "/")
        assert c.getresponse().read() == b"hello\n"
    ca, cb = harness.ChatClient(("127.0.0.1", cport)), harness.ChatClient(("127.0.0.1", cport))
    ca.join("alice")
    cb.join("bob")
    assert ca.line() == "[bob joined]"
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", fport, timeout=10)
    ftp.login()
    ftp.voidcmd("NOOP")
    # A passive port opened before the flood, connected to while the server
    # is out of descriptors: its accept fails, which must not spin.
    ftp2 = ftplib.FTP()
    ftp2.connect("127.0.0.1", fport, timeout=10)
    ftp2.login()
    pasv_port = ftplib.parse227(ftp2.sendcmd("PASV"))[1]

    # The flood: connections that send a partial request, in rounds, until
    # the server has stopped taking them.
    flood = []
    kinds = [(hport, b"GET / HTTP/1.1\r\nHost: flood\r\n"), (cport, b"nick"),
             (fport, b"USER anonym"), (aport, b"garbage-without-newline")]
    t0 = time.monotonic()
    for i in range(args.conns):
        port, data = kinds[i % len(kinds)] if i % 40 else kinds[3]
        if port == aport and i % 40:
            port, data = kinds[0]
        s = stresslib.nonblocking_connect(port)
        flood.append((s, data))
    time.sleep(1.0)
    sent = 0
    for s, data in flood:
        try:
            s.send(data)
            sent += 1
        except OSError:
            pass  # still connecting: the kernel's queue and SYN retries hold it
    print("flood: %d connections opened in %.1f s, %d sent their bytes"
          % (len(flood), time.monotonic() - t0, sent))
    harness.wait_for(lambda: srv.fds() >= args.nofile - 8, 20,
                     "medusad to reach its descriptor limit")
    chk.check(True, "medusad reached its limit: %d descriptors of %d" % (srv.fds(), args.nofile))
    # Passive FTP data ports cannot be opened now; and a data connection
    # waiting to be accepted must not make a worker spin.
    try:
        ftp.voidcmd("TYPE I")
        r = ftp.sendcmd("PASV")
        chk.check(False, "PASV while out of descriptors: got %r (expected 425)" % r)
    except ftplib.error_temp as e:
        chk.check(str(e).startswith("425"), "PASV while out of descriptors is 425: %s" % e)

    # Now that nothing is left: a data connection to the passive port, one
    # more console connection, and a file nobody asked for yet (it needs a
    # descriptor: an error answer, not a hang).
    meter = CpuMeter(srv.pid)
    threads0 = stresslib.thread_cpu(srv.pid)
    hung = [stresslib.nonblocking_connect(pasv_port), stresslib.nonblocking_connect(aport)]
    c = http.client.HTTPConnection("127.0.0.1", hport, timeout=10)
    try:
        c.request("GET", "/big.bin")
        r = c.getresponse()
        r.read()
        chk.check(r.status in (200, 500, 503), "a file not yet open while out of descriptors: "
                  "%d %s" % (r.status, r.reason))
    except Exception as e:  # noqa: BLE001
        print("  (a new connection while out of descriptors: %s: %s)" % (type(e).__name__, e))
    c.close()
    try:
        keep[0].request("GET", "/big.bin")
        r = keep[0].getresponse()
        body = r.read()
        chk.check(r.status in (200, 500, 503), "a file not yet open, on a held connection: "
                  "%d %s (%d bytes)" % (r.status, r.reason, len(body)))
        if r.getheader("connection", "").lower() == "close":
            keep[0] = http.client.HTTPConnection("127.0.0.1", hport, timeout=10)
    except Exception as e:  # noqa: BLE001
        chk.check(False, "a file not yet open, on a held connection: %s: %s"
                  % (type(e).__name__, e))
        keep[0] = http.client.HTTPConnection("127.0.0.1", hport, timeout=10)
    time.sleep(1)
    lat, fails = [], []
    end = time.monotonic() + args.hold
    n = 0
    while time.monotonic() < end:
        t = time.monotonic()
        try:
            c = keep[n % len(keep)]
            c.request("GET", "/" if n % 2 else "/index.html")
            r = c.getresponse()
            body = r.read()
            if r.status != 200 or body != b"hello\n":
                fails.append("http %d %r" % (r.status, body[:60]))
            ca.send_line("m%d" % n)
            got = cb.line(timeout=10)
            if got != "alice: m%d" % n:
                fails.append("chat %r" % got)
            ftp.voidcmd("NOOP")
            ftp.sendcmd("PWD")
        except Exception as e:  # noqa: BLE001 - every failure is counted
            fails.append("%s: %s" % (type(e).__name__, e))
        lat.append(time.monotonic() - t)
        n += 1
        time.sleep(0.1)
    cpu = meter.share()
    busy = stresslib.busiest_threads(srv.pid, threads0)
    chk.check(cpu < args.max_cpu, "medusad's CPU while out of descriptors: %.1f %% of a core "
              "(bound %.0f %%; busiest threads %s)" % (cpu * 100, args.max_cpu * 100, busy))
    chk.check(not fails, "held connections served during exhaustion: %d rounds (HTTP keep-alive, "
              "chat line, FTP NOOP+PWD), %d failures %s" % (n, len(fails), fails[:3]))
    print("held-connection round latency:", stresslib.lat_text(lat))
    chk.check(stresslib.pct(lat, 99) < 2.0, "p99 round latency under 2 s")
    log = srv.log_text()
    print("'pausing accepts' log lines: %d, 'admin accept' lines: %d, log %d bytes" % (log.count("pausing accepts"), log.count("admin accept"), len(log)))
    chk.check(len(log) < 2 << 20, "the error log stays small while out of descriptors: %d bytes "
              "(a spinning accept logs without end)" % len(log))

    # The flood goes; new clients are served.
    stresslib.close_all([s for s, _ in flood] + hung)
    ftp2.close()
    flood = []
    t = time.monotonic()

    def served():
        try:
            c = http.client.HTTPConnection("127.0.0.1", hport, timeout=2)
            c.request("GET", "/big.bin")
            r = c.getresponse()
            ok = r.status == 200 and len(r.read()) == 256 << 10
            c.close()
            return ok
        except OSError:
            return False
    try:
        harness.wait_for(served, 30, "a new HTTP client to be served")
        chk.check(True, "a new HTTP client served %.1f s after the flood ended"
                  % (time.monotonic() - t))
    except AssertionError as e:
        chk.check(False, str(e))
    try:
        late = harness.ChatClient(("127.0.0.1", cport))
        late.join("late")
        late.close()
        f2 = ftplib.FTP()
        f2.connect("127.0.0.1", fport, timeout=10)
        f2.login()
        chunks = []
        f2.retrbinary("RETR f.txt", chunks.append)
        f2.quit()
        chk.check(b"".join(chunks) == b"ftp file\n", "new chat and FTP (PASV + RETR) clients served")
        rc, out, err = harness.ctl("-a", "127.0.0.1:%d" % aport, "-k", os.path.join(d, "admin.secret"),
                                   "info")
        chk.check(rc == 0, "medusactl over TCP served after the flood (rc %d %s)" % (rc, err.strip()))
    except Exception as e:  # noqa: BLE001
        chk.check(False, "new clients after the flood: %s: %s" % (type(e).__name__, e))
    for c in keep:
        c.close()
    ca.close()
    cb.close()
    ftp.close()
    stresslib.back_to_baseline(chk, srv, fds0, rss0)
    chk.check(srv.stop() == 0, "medusad stops cleanly (exit 0)")
    return chk.report(srv)


if __name__ == "__main__":
    sys.exit(main())
