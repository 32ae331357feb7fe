"""Shared helpers for the stress scripts in this folder (standard library
only): start medusad (optionally with a lower RLIMIT_NOFILE) through the
integration harness, read its CPU time, RSS and descriptors from /proc,
make TLS certificates, keep latencies and print percentiles, and collect
the checks a run makes so that it exits 1 on any failure.

Each script takes the medusad binary as its first argument; medusactl is
taken from the same folder (tests/integration/harness.py)."""
import os
import resource
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402  (after the path is set)

BACKEND = os.path.join(HERE, "..", "integration", "backend.py")
CLK = os.sysconf("SC_CLK_TCK")


def use(medusad):
    """Points the harness at this medusad (and the medusactl beside it)."""
    harness.MEDUSAD = os.path.abspath(medusad)
    harness.MEDUSACTL = os.path.join(os.path.dirname(harness.MEDUSAD), "medusactl")
    raise_nofile()


def raise_nofile():
    """This process may need thousands of sockets: soft limit = hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Server(harness.Server):
    """harness.Server, plus: nofile (medusad's RLIMIT_NOFILE, set before it
    starts), its stderr kept in a file (sanitizer reports), extra top-level
    configuration text."""

    def __init__(self, conf, workers=None, dir=None, admin=False, level="warn", nofile=None):
        self.dir = dir or harness.temp_dir()
        self.conf = os.path.join(self.dir, "medusa.conf")
        self.log = os.path.join(self.dir, "error.log")
        self.sock = os.path.join(self.dir, "run", "admin.sock") if admin else None
        self.level = level
        self.write_conf(conf)
        args = [harness.MEDUSAD, "-c", self.conf]
        if workers:
            args += ["-w", str(workers)]

        def limit():
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.stderr = open(os.path.join(self.dir, "stderr"), "w+")
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=self.stderr,
                                     preexec_fn=limit)
        import atexit
        atexit.register(self.cleanup)
        self.wait_for_start()

    def wait_for_start(self, timeout=20):
        # level warn hides "medusad started": wait for the listeners instead
        # (every worker holds one socket per TCP listener once it is up).
        harness.wait_for(lambda: self.proc.poll() is not None or self.started(), timeout,
                         "medusad to start")
        if self.proc.poll() is not None:
            raise AssertionError("medusad exited (%s): %s" % (self.proc.returncode,
                                                              self.stderr_text()[-3000:]))

    def started(self):
        with open(self.conf) as f:
            text = f.read()
        import re
        ports = [int(p) for p in re.findall(r'"127\.0\.0\.1:(\d+)"', text)]
        return ports and all(harness.listening_sockets(p) > 0 for p in ports)

    def write_conf(self, conf):
        # CI runs as root, and the stress servers have no user of their own
        text = 'allow_root = true;\nlog = { level = "%s"; error_log = "error.log"; };\n' % self.level
        if self.sock and "admin = {" not in conf:
            text += 'admin = { listen = [ "unix:run/admin.sock" ]; };\n'
        text += conf
        with open(self.conf, "w") as f:
            f.write(text)

    def stderr_text(self):
        self.stderr.flush()
        with open(self.stderr.name, errors="replace") as f:
            return f.read()

    def sanitizer_report(self):
        t = self.stderr_text()
        return t if ("Sanitizer" in t or "runtime error" in t) else ""

    def cpu_s(self):
        return cpu_seconds(self.pid)

    def rss(self):
        return harness.rss_kib(self.pid)

    def nfds(self):
        return self.fds()


def cpu_seconds(pid):
    """User + system CPU seconds of a process, every thread."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def thread_cpu(pid):
    """{thread name + tid: CPU seconds} of every thread of pid."""
    out = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                head, rest = f.read().rsplit(")", 1)
            fields = rest.split()
            out["%s/%s" % (head.split("(", 1)[1], tid)] = (int(fields[11]) + int(fields[12])) / CLK
        except (OSError, IndexError):
            pass
    return out


def busiest_threads(pid, before, n=3):
    """The n threads that used the most CPU since `before` (thread_cpu)."""
    now = thread_cpu(pid)
    used = sorted(((now[k] - before.get(k, 0.0), k) for k in now), reverse=True)[:n]
    return ", ".join("%s %.1fs" % (k, v) for v, k in used)


class CpuMeter:
    """CPU share of one core used by pid between start() and share()."""

    def __init__(self, pid):
        self.pid = pid
        self.start()

    def start(self):
        self.t0, self.c0 = time.monotonic(), cpu_seconds(self.pid)

    def share(self):
        dt = time.monotonic() - self.t0
        return (cpu_seconds(self.pid) - self.c0) / dt if dt > 0 else 0.0


def sockets_to(pid, port):
    """How many of pid's descriptors are TCP connections to 127.0.0.1:port."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if int(parts[2].rsplit(":", 1)[1], 16) == port and parts[3] != "0A":
                        inodes.add(parts[9])
        except FileNotFoundError:
            pass
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            t = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if t.startswith("socket:[") and t[8:-1] in inodes:
            n += 1
    return n


def pct(values, p):
    """The p-th percentile (nearest rank) of values; None when empty."""
    if not values:
        return None
    v = sorted(values)
    k = max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def lat_text(values):
    if not values:
        return "n=0"
    return "n=%d p50=%.1f ms p99=%.1f ms max=%.1f ms" % (
        len(values), pct(values, 50) * 1000, pct(values, 99) * 1000, max(values) * 1000)


class Checks:
    """Named checks; report() prints them and returns the exit status."""

    def __init__(self, name):
        self.name = name
        self.results = []
        self.t0 = time.monotonic()

    def check(self, ok, what):
        self.results.append((bool(ok), what))
        print("%s - %s" % ("ok" if ok else "FAIL", what), flush=True)
        return ok

    def check_rss(self, ok, what):
        """A check on RSS: only reported for a sanitizer build, whose RSS
        holds the sanitizer's own (shadow memory, quarantine)."""
        if harness.sanitized():
            print("(not checked: a sanitizer build) - %s" % what, flush=True)
            return True
        return self.check(ok, what)

    def report(self, srv=None):
        if srv is not None:
            rep = srv.sanitizer_report()
            self.check(not rep, "no sanitizer report in medusad's stderr")
            if rep:
                print(rep[:5000])
        failed = [w for ok, w in self.results if not ok]
        print("%s: %d passed, %d failed (%.0f s)" % (self.name, len(self.results) - len(failed),
                                                     len(failed), time.monotonic() - self.t0))
        return 1 if failed else 0


def make_cert(d, name="cert", cn="localhost"):
    """A self-signed ECDSA certificate for localhost and 127.0.0.1 (as
    tests/integration/test_tls.py makes them): (cert, key), key mode 600."""
    cert, key = os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-nodes", "-days", "30", "-subj", "/CN=" + cn,
                    "-addext", "subjectAltName=DNS:%s,IP:127.0.0.1" % cn, "-keyout", key,
                    "-out", cert, "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    return cert, key


def start_backend(name="b"):
    """tests/integration/backend.py on a free port: (process, port)."""
    port = harness.free_port()
    p = subprocess.Popen(["/usr/bin/python3", BACKEND, str(port), name], stdout=subprocess.PIPE)
    p.stdout.readline()
    return p, port


def nonblocking_connect(port, host="127.0.0.1", rcvbuf=None):
    """A socket with a connect in progress (EINPROGRESS is fine)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.setblocking(False)
    s.connect_ex((host, port))
    return s


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass
    del socks[:]


def settle(srv, what="fds", quiet=2.0, timeout=30.0):
    """The server's descriptor count once it has not changed for `quiet` s."""
    deadline = time.monotonic() + timeout
    last, since = srv.fds(), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.1)
        now = srv.fds()
        if now != last:
            last, since = now, time.monotonic()
    return last


def back_to_baseline(chk, srv, fds0, rss0, fd_slack=8, rss_slack_kib=None, timeout=30.0,
                     rss_check=True):
    """Checks that descriptors and RSS come back close to the baseline
    (RSS only reported with rss_check=False); returns (fds, rss)."""
    if rss_slack_kib is None:
        rss_slack_kib = max(16384, rss0 // 2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.fds() <= fds0 + fd_slack and (srv.rss() <= rss0 + rss_slack_kib or not rss_check):
            break
        time.sleep(0.5)
    fds, rss = settle(srv, quiet=1.0, timeout=10), srv.rss()
    chk.check(fds <= fds0 + fd_slack, "descriptors back to baseline: %d (baseline %d, slack %d)"
              % (fds, fds0, fd_slack))
    if not rss_check:
        print("RSS afterwards: %d KiB (baseline %d KiB)" % (rss, rss0))
        return fds, rss
    chk.check_rss(rss <= rss0 + rss_slack_kib, "RSS back near baseline: %d KiB (baseline %d KiB, "
              "slack %d KiB)" % (rss, rss0, rss_slack_kib))
    return fds, rss
