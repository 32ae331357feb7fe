#!/usr/bin/python3
"""Soak: mixed traffic for --minutes, in clear and over TLS, while the
server reloads (--reload-every seconds, medusactl reload) and changes its
worker count (--scale-every seconds, medusactl workers set, cycling
--workers-cycle), then checks that nothing was lost.

Traffic (each kind a client thread, every operation checked):
  http, https   keep-alive GETs of static files (content compared), PUT
                uploads (recorded, compared at the end from disk), GETs and
                POST uploads through the proxy to tests/integration/backend.py
                (its SHA-256 of the body compared)
  ftp, ftps     ftplib / FTP_TLS with PROT P: STOR of random files, RETR
                of them back (compared), LIST, RETR of a 1 MiB file
  chat, chats   a pair of users: each line one sends reaches the other
  echo, echos   random blocks echoed back intact
  admin         medusactl over TCP (stats json) and the Unix socket (info)

What counts as a failure: any operation whose answer is wrong or missing,
or whose connection breaks, with one exception the README documents: a
TLS session of chat, echo or FTP cannot move between workers, so when its
worker leaves (scale-down) it is told ("worker is leaving", FTP 421/426)
and closed within grace_period; such a close within grace_period + 5 s of
a scale-down is counted apart as 'closed by scale-down' and the client
reconnects. Plain sessions and HTTP keep-alive (clear or TLS) move and
must never break. The operation cut that way is done again.

Resources: at the end of the warm-up and at the end of the run the
clients pause, the server is set to 2 workers and settles, and its RSS and
descriptors are read (/proc/PID/status, /proc/PID/fd): each may grow by
less than 5 %. They are also sampled every --sample seconds (shown). At
the end every uploaded file must be on disk, complete and correct.

    tests/stress/soak.py build/medusad --minutes 10
    tests/stress/soak.py build/medusad --minutes 1.5 --reload-every 10 --scale-every 20   # ctest
"""
import argparse
import ftplib
import hashlib
import http.client
import io
import json
import os
import random
import socket
import ssl
import sys
import threading
import time
import warnings

import stresslib
from stresslib import harness

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

GRACE = 3
NOMOVE = ("ftps", "chats", "echos")  # TLS sessions that cannot move between workers


class ScaleDown(Exception):
    """A TLS session closed because its worker left (documented)."""


class Soak:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.ops, self.fails, self.legit = {}, {}, {}
        self.stop = threading.Event()
        self.running = threading.Event()  # cleared: clients pause between operations
        self.running.set()
        self.busy = 0  # clients inside an operation
        self.nloops = self.parked = 0  # client loops; those waiting, their connections closed
        self.uploads = {}  # path on disk -> sha256 of what the last successful upload sent
        self.nuploads = 0
        self.scale_downs = []  # monotonic times
        self.reloads = self.scalings = 0
        self.samples = []

    # -- bookkeeping --
    def ok(self, kind, n=1):
        with self.lock:
            self.ops[kind] = self.ops.get(kind, 0) + n

    def fail(self, kind, what):
        with self.lock:
            self.fails.setdefault(kind, []).append("%.0fs %s" % (time.monotonic() - self.t0, what))
        print("FAILURE %s: %s" % (kind, what), flush=True)

    def scaled_down_lately(self):
        now = time.monotonic()
        return any(0 <= now - t <= GRACE + 5 for t in self.scale_downs)

    def legit_close(self, kind, what):
        with self.lock:
            self.legit[kind] = self.legit.get(kind, 0) + 1
        print("closed by scale-down %s: %s" % (kind, what[:100]), flush=True)

    def loop(self, kind, setup, op, teardown, pause=0.02):
        """Runs op(state) until the end; setup/teardown open and close the
        client's connections. A ScaleDown is a documented close (TLS
        sessions on a leaving worker); anything else is a failure. Both
        reconnect."""
        state = None
        with self.lock:
            self.nloops += 1
        while not self.stop.is_set():
            if not self.running.is_set():  # a checkpoint: connections closed
                teardown(state)
                state = None
                with self.lock:
                    self.parked += 1
                self.running.wait()
                with self.lock:
                    self.parked -= 1
            with self.lock:
                self.busy += 1
            try:
                if state is None:
                    state = setup()
                if op(state) == "reconnect":  # the client's own choice
                    teardown(state)
                    state = None
            except ScaleDown as e:
                self.legit_close(kind, str(e))
                teardown(state)
                state = None
            except Exception as e:  # noqa: BLE001 - every failure is counted
                msg = "%s: %s" % (type(e).__name__, e)
                closing = isinstance(e, (EOFError, ConnectionError, ssl.SSLError,
                                         ftplib.error_temp)) and not isinstance(e, TimeoutError)
                if kind in NOMOVE and ("leaving" in msg or (closing and self.scaled_down_lately())):
                    self.legit_close(kind, msg)
                else:
                    self.fail(kind, msg)
                teardown(state)
                state = None
            finally:
                with self.lock:
                    self.busy -= 1
            self.stop.wait(pause)
        teardown(state)

    def pause(self):
        self.running.clear()
        harness.wait_for(lambda: self.parked == self.nloops, 60, "clients to pause")

    def resume(self):
        self.running.set()


def make_site(d):
    os.makedirs(os.path.join(d, "www"))
    os.makedirs(os.path.join(d, "up"))
    os.makedirs(os.path.join(d, "ftp", "pub"))
    os.makedirs(os.path.join(d, "ftp", "home", "soak"))
    files = {}
    for name, size in (("index.html", 0), ("a.bin", 3000), ("b.bin", 200000), ("c.bin", 2 << 20)):
        data = b"soak index\n" if not size else os.urandom(size)
        with open(os.path.join(d, "www", name), "wb") as f:
            f.write(data)
        files["/" + name] = hashlib.sha256(data).hexdigest()
    with open(os.path.join(d, "ftp", "pub", "one.bin"), "wb") as f:
        blob = os.urandom(1 << 20)
        f.write(blob)
    with open(os.path.join(d, "ftpusers"), "w") as f:
        f.write("soak:%s:ftp/home/soak:read,write,delete,mkdir,rename\n"
                % crypt.crypt("soakpw", crypt.mksalt(crypt.METHOD_SHA512)))
    files["ftp:/pub/one.bin"] = hashlib.sha256(blob).hexdigest()
    stresslib.make_cert(d)
    harness.write_secret(os.path.join(d, "admin.secret"), "soak-admin-secret-0123456789")
    return files


def conf(p, server_name):
    tls = 'tls = { certificate = "cert.pem"; key = "cert.key"; };'
    lo = 40000 + (os.getpid() % 60) * 100
    return ('workers = 2;\ngrace_period = %d;\n' % GRACE +
            'admin = { listen = [ "unix:run/admin.sock", "127.0.0.1:%d" ]; secret = "admin.secret"; };\n'
            % p["admin"] +
            'upstreams = ( { name = "app"; servers = [ "127.0.0.1:%d" ]; } );\n' % p["backend"] +
            'http = ( { name = "web"; listen = [ "127.0.0.1:%d" ]; tls_listen = [ "127.0.0.1:%d" ]; %s\n'
            '  server = "%s"; max_body = 4194304;\n'
            '  vhosts = ( { names = [ "*" ]; handlers = ( { type = "status"; path = "/status"; },\n'
            '    { type = "put"; path = "/up/"; root = "up"; },\n'
            '    { type = "proxy"; path = "/api/"; upstream = "app"; strip_prefix = true; },\n'
            '    { type = "static"; path = "/"; root = "www"; } ); } ); } );\n'
            % (p["http"], p["https"], tls, server_name) +
            'ftp = ( { name = "ftp"; listen = [ "127.0.0.1:%d" ]; tls_listen = [ "127.0.0.1:%d" ]; %s\n'
            '  root = "ftp"; anonymous = true; users = "ftpusers"; max_sessions_per_ip = 0;\n'
            '  passive_ports = [ %d, %d ]; } );\n' % (p["ftp"], p["ftps"], tls, lo, lo + 999) +
            'chat = ( { name = "chat"; listen = [ "127.0.0.1:%d" ]; tls_listen = [ "127.0.0.1:%d" ]; %s } );\n'
            % (p["chat"], p["chats"], tls) +
            'echo = ( { name = "echo"; listen = [ "127.0.0.1:%d" ]; tls_listen = [ "127.0.0.1:%d" ]; %s } );\n'
            % (p["echo"], p["echos"], tls))


# ---- the clients ----

def http_client(soak, kind, port, ctx, files, d, tid):
    rng = random.Random(tid)
    n = [0]

    def setup():
        if ctx:
            return http.client.HTTPSConnection("localhost", port, context=ctx, timeout=30)
        return http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(c, method, path, body=None):
        c.request(method, path, body=body)
        r = c.getresponse()
        return r.status, r.read()

    def op(c):
        n[0] += 1
        k = n[0] % 5
        if k in (0, 1):  # static
            path = rng.choice(sorted(p for p in files if p.startswith("/")))
            st, body = request(c, "GET", path)
            assert st == 200 and hashlib.sha256(body).hexdigest() == files[path], (path, st)
        elif k == 2:  # upload
            name = "%s-%d-%d" % (kind, tid, n[0] % 16)
            data = os.urandom(rng.randint(1, 300000))
            st, body = request(c, "PUT", "/up/" + name, data)
            assert st in (201, 204), (st, body[:80])
            with soak.lock:
                soak.uploads[os.path.join(d, "up", name)] = hashlib.sha256(data).hexdigest()
                soak.nuploads += 1
        elif k == 3:  # proxy, GET
            st, body = request(c, "GET", "/api/big?n=%d" % rng.randint(1, 150000))
            assert st == 200, st
        else:  # proxy, POST
            data = os.urandom(rng.randint(1, 200000))
            st, body = request(c, "POST", "/api/upload", data)
            assert st == 200 and json.loads(body)["sha256"] == hashlib.sha256(data).hexdigest(), st
        soak.ok(kind)

    soak.loop(kind, setup, op, lambda c: c and c.close())


def ftp_client(soak, kind, port, ctx, d, tid):
    rng = random.Random(tid + 100)
    n = [0]
    home = os.path.join(d, "ftp", "home", "soak")

    def setup():
        if ctx:
            f = harness.ReusingFTP_TLS(context=ctx)
            f.connect("localhost", port, timeout=30)
            f.auth()
            f.login("soak", "soakpw")
            f.prot_p()
        else:
            f = ftplib.FTP()
            f.connect("127.0.0.1", port, timeout=30)
            f.login("soak", "soakpw")
        return f

    def op(f):
        n[0] += 1
        name = "%s-%d-%d.bin" % (kind, tid, n[0] % 16)
        data = os.urandom(rng.randint(1, 400000))
        f.storbinary("STOR " + name, io.BytesIO(data))
        with soak.lock:
            soak.uploads[os.path.join(home, name)] = hashlib.sha256(data).hexdigest()
            soak.nuploads += 1
        got = []
        f.retrbinary("RETR " + name, got.append)
        assert b"".join(got) == data, "RETR of %s differs" % name
        if n[0] % 4 == 0:
            names = f.nlst()
            assert name in names, (name, names[:5])
        soak.ok(kind)
        if n[0] % 10 == 0:  # a new session now and then
            f.quit()
            return "reconnect"

    soak.loop(kind, setup, op, lambda f: f and f.close(), pause=0.05)


def tls_sock(ctx, port):
    return ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=30),
                           server_hostname="localhost")


class Lines:
    """Lines from a socket (plain or TLS)."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise EOFError("closed by the server; had %r" % self.buf[-100:])
            self.buf += d
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line.decode(errors="replace")


def chat_client(soak, kind, port, ctx, tid):
    n = [0]
    nick = "%s%d_%d" % (kind, tid, os.getpid() % 1000)
    seq = [0]

    def connect(who):
        s = tls_sock(ctx, port) if ctx else socket.create_connection(("127.0.0.1", port), 30)
        r = Lines(s)
        while b"nickname?: " not in r.buf:
            d = s.recv(4096)
            if not d:
                raise EOFError("closed before the prompt")
            r.buf += d
        r.buf = b""
        s.sendall(who.encode() + b"\r\n")
        w = r.line()
        assert w.startswith("* welcome"), w
        return s, r

    def setup():
        seq[0] += 1
        a = connect("%sa%d" % (nick, seq[0]))
        b = connect("%sb%d" % (nick, seq[0]))
        return a, b, "%sa%d" % (nick, seq[0])

    def st_nick(st):
        return st[2]

    def op(st):
        (sa, ra), (sb, rb), _ = st
        n[0] += 1
        text = "line %d %s" % (n[0], "z" * (n[0] % 300))
        sa.sendall(text.encode() + b"\r\n")
        want = "%s: %s" % (st_nick(st), text)
        while True:  # the room is shared: skip notices and other pairs' lines
            got = rb.line()
            if "worker is leaving" in got:
                raise ScaleDown(got)
            if got.startswith(st_nick(st) + ": "):
                break
        assert got == want, (got[:80], want[:80])
        for r in (ra,):  # drain what a got (joins, notices)
            r.sock.settimeout(0.001)
            try:
                while True:
                    d = r.sock.recv(65536)
                    if not d:
                        raise EOFError("closed by the server")
                    if b"worker is leaving" in d:
                        raise ScaleDown("a: worker is leaving")
            except (socket.timeout, ssl.SSLWantReadError):
                pass
            finally:
                r.sock.settimeout(30)
        soak.ok(kind)

    def teardown(st):
        if st:
            for s, _ in st[:2]:
                s.close()

    soak.loop(kind, setup, op, teardown)


def echo_client(soak, kind, port, ctx, tid):
    rng = random.Random(tid + 200)
    n = [0]

    def setup():
        return tls_sock(ctx, port) if ctx else socket.create_connection(("127.0.0.1", port), 30)

    def op(s):
        n[0] += 1
        data = os.urandom(rng.randint(1, 60000))
        s.sendall(data)
        got = b""
        while len(got) < len(data):
            d = s.recv(65536)
            if not d:
                raise EOFError("closed by the server after %d of %d bytes" % (len(got), len(data)))
            got += d
        assert got == data, "echo differs"
        soak.ok(kind)

    soak.loop(kind, setup, op, lambda s: s and s.close())


def admin_client(soak, srv, aport, secret):
    n = [0]

    def op(_):
        n[0] += 1
        if n[0] % 2:
            rc, out, err = harness.ctl("-a", "127.0.0.1:%d" % aport, "-k", secret, "stats", "json")
            assert rc == 0, err
            json.loads(out)
        else:
            rc, out, err = harness.ctl("-s", srv.sock, "info")
            assert rc == 0 and "pid" in out, (rc, out[:80], err)
        soak.ok("admin")

    soak.loop("admin", lambda: True, op, lambda _: None, pause=1.0)


# ---- the run ----

def checkpoint(soak, srv, what):
    """Clients paused, 2 workers, settled: (rss, fds)."""
    soak.pause()
    try:
        with soak.lock:
            soak.scale_downs.append(time.monotonic())
        srv.ctl("workers", "set", "2")
        srv.wait_workers_settled(60)
        time.sleep(2)
        fds = stresslib.settle(srv, quiet=2.0, timeout=20)
        pooled = stresslib.sockets_to(srv.pid, soak.backend_port)
        rss = srv.rss()
    finally:
        with soak.lock:  # TLS sessions of a worker that left find out now
            soak.scale_downs.append(time.monotonic())
        soak.resume()
    print("checkpoint %s: RSS %d KiB, %d descriptors (%d of them idle connections to the "
          "backend, pooled by the proxy, not counted); by kind: %s"
          % (what, rss, fds, pooled, srv.fd_kinds()), flush=True)
    return rss, fds - pooled


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("medusad")
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--reload-every", type=float, default=30, help="seconds between reloads")
    ap.add_argument("--scale-every", type=float, default=60,
                    help="seconds between 'workers set' changes")
    ap.add_argument("--workers-cycle", default="3,1,2", help="worker counts, in turn")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds before the first checkpoint (default: a fifth of the run, "
                    "at least 1.5 scalings)")
    ap.add_argument("--sample", type=float, default=5, help="seconds between RSS/fd samples")
    ap.add_argument("--threads", type=int, default=1, help="client threads per kind")
    args = ap.parse_args()
    stresslib.use(args.medusad)
    duration = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else max(duration / 5, args.scale_every * 1.5)
    cycle = [int(x) for x in args.workers_cycle.split(",")]
    d = harness.temp_dir()
    files = make_site(d)
    backend, bport = stresslib.start_backend("soak")
    p = {k: harness.free_port() for k in ("admin", "http", "https", "ftp", "ftps", "chat", "chats",
                                          "echo", "echos")}
    p["backend"] = bport
    srv = stresslib.Server(conf(p, "medusa"), dir=d, admin=True)
    ctx = ssl.create_default_context(cafile=os.path.join(d, "cert.pem"))
    soak = Soak(args)
    soak.t0 = time.monotonic()
    soak.backend_port = bport
    secret = os.path.join(d, "admin.secret")
    threads = []
    for t in range(args.threads):
        threads += [
            threading.Thread(target=http_client, args=(soak, "http", p["http"], None, files, d, t)),
            threading.Thread(target=http_client, args=(soak, "https", p["https"], ctx, files, d, t)),
            threading.Thread(target=ftp_client, args=(soak, "ftp", p["ftp"], None, d, t)),
            threading.Thread(target=ftp_client, args=(soak, "ftps", p["ftp"], ctx, d, t)),
            threading.Thread(target=chat_client, args=(soak, "chat", p["chat"], None, t)),
            threading.Thread(target=chat_client, args=(soak, "chats", p["chats"], ctx, t)),
            threading.Thread(target=echo_client, args=(soak, "echo", p["echo"], None, t)),
            threading.Thread(target=echo_client, args=(soak, "echos", p["echos"], ctx, t)),
        ]
    threads.append(threading.Thread(target=admin_client, args=(soak, srv, p["admin"], secret)))
    for t in threads:
        t.start()
    start_rss, start_fds = srv.rss(), srv.fds()
    end = soak.t0 + duration
    next_reload = soak.t0 + args.reload_every
    next_scale = soak.t0 + args.scale_every
    next_sample = soak.t0
    warm = None
    k = 0
    workers = 2
    reload_fail = []
    try:
        while time.monotonic() < end and srv.proc.poll() is None:
            now = time.monotonic()
            if warm is None and now - soak.t0 >= warmup:
                warm = checkpoint(soak, srv, "after warm-up (%.0f s)" % warmup)
                workers = 2
            if now >= next_reload:
                next_reload += args.reload_every
                # the file changes (the Server header) and is read again
                srv.write_conf(conf(p, "medusa-%d" % soak.reloads))
                out = srv.ctl("reload")
                if "ok" not in out.lower() and "reloaded" not in out.lower():
                    reload_fail.append(out.strip())
                soak.reloads += 1
            if now >= next_scale:
                next_scale += args.scale_every
                n = cycle[k % len(cycle)]
                k += 1
                if n < workers:
                    with soak.lock:
                        soak.scale_downs.append(time.monotonic())
                srv.ctl("workers", "set", str(n))
                workers = n
                soak.scalings += 1
                print("%.0f s: workers set %d; ops so far %d" % (now - soak.t0, n,
                                                                sum(soak.ops.values())), flush=True)
            if now >= next_sample:
                next_sample += args.sample
                soak.samples.append((now - soak.t0, srv.rss(), srv.fds()))
            time.sleep(0.2)
        alive = srv.proc.poll() is None
        final = checkpoint(soak, srv, "at the end") if alive and warm else None
    finally:
        soak.stop.set()
        soak.running.set()
        for t in threads:
            t.join(120)
    chk = stresslib.Checks("soak")
    chk.t0 = soak.t0
    chk.check(alive, "medusad alive for the whole run")
    chk.check(not reload_fail, "every reload ok (%d; failures: %s)" % (soak.reloads, reload_fail[:2]))
    # uploads on disk
    bad = []
    for path, digest in sorted(soak.uploads.items()):
        try:
            with open(path, "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != digest:
                    bad.append(path)
        except OSError as e:
            bad.append("%s: %s" % (path, e))
    # the table
    kinds = ["http", "https", "ftp", "ftps", "chat", "chats", "echo", "echos", "admin"]
    print("\n%-7s %9s %9s %17s" % ("kind", "ops", "failures", "closed-by-scaling"))
    for kd in kinds:
        print("%-7s %9d %9d %17d" % (kd, soak.ops.get(kd, 0), len(soak.fails.get(kd, [])),
                                      soak.legit.get(kd, 0)))
    total = sum(soak.ops.values())
    nfail = sum(len(v) for v in soak.fails.values())
    print("%-7s %9d %9d %17d" % ("total", total, nfail, sum(soak.legit.values())))
    dt = time.monotonic() - soak.t0
    print("%.0f s, %.1f ops/s; %d reloads, %d scalings (%s); %d uploads (each FTP one read back "
          "at once), the last version of each of %d files compared on disk at the end"
          % (dt, total / dt, soak.reloads, soak.scalings, args.workers_cycle, soak.nuploads,
             len(soak.uploads)))
    if soak.samples:
        rs = [s[1] for s in soak.samples]
        fs = [s[2] for s in soak.samples]
        print("samples (every %.0f s, under load): RSS %d..%d KiB, descriptors %d..%d; "
              "first RSS %d KiB / %d fds, last %d KiB / %d fds"
              % (args.sample, min(rs), max(rs), min(fs), max(fs), start_rss, start_fds, rs[-1], fs[-1]))
    for kd, v in soak.fails.items():
        for m in v[:5]:
            print("  failure %s: %s" % (kd, m))
    chk.check(nfail == 0, "zero failed operations (%d of %d)" % (nfail, total))
    for kd in kinds:
        chk.check(soak.ops.get(kd, 0) > 0, "%s operations made: %d" % (kd, soak.ops.get(kd, 0)))
    chk.check(not bad, "every uploaded file complete and correct (%d files; bad: %s)"
              % (len(soak.uploads), bad[:3]))
    if warm and final:
        print("%-12s %12s %12s" % ("checkpoint", "RSS KiB", "descriptors"))
        print("%-12s %12d %12d" % ("warm-up", warm[0], warm[1]))
        print("%-12s %12d %12d" % ("end", final[0], final[1]))
        chk.check_rss(final[0] < warm[0] * 1.05, "RSS flat after warm-up: %d -> %d KiB (%+.1f %%)"
                  % (warm[0], final[0], (final[0] / warm[0] - 1) * 100))
        chk.check(final[1] < warm[1] * 1.05, "descriptors flat after warm-up: %d -> %d (%+.1f %%)"
                  % (warm[1], final[1], (final[1] / warm[1] - 1) * 100))
    else:
        chk.check(False, "both checkpoints taken (the run is longer than the warm-up)")
    chk.check(srv.stop() == 0, "medusad stops cleanly (exit 0)")
    backend.kill()
    backend.wait()
    return chk.report(srv)


if __name__ == "__main__":
    sys.exit(main())
