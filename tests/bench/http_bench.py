#!/usr/bin/python3
"""HTTP benchmark: medusad against nginx (and h2o where it runs), side by side.

Each server gets one worker pinned to CPU 0, wrk is pinned to CPU 1, the files
are the same, access logs are off. Runs are interleaved (every server, every
scenario, then again, the order of servers rotating each round). Requests/s
are the median of the rounds; the ratio to nginx is the median of the
per-round ratios. Then, on fresh servers: memory (10,000 idle keep-alive
connections, RSS growth per connection) and 10,000 concurrent connections.

    tests/bench/http_bench.py build/medusad [--rounds 5] [--duration 5]
    tests/bench/http_bench.py build/medusad --baseline OLD/medusad   # a change, side by side

Needs nginx (nginx-light), wrk and optionally h2o from Debian:
    apt-get install nginx-light wrk h2o
"""
import argparse
import os
import re
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time

SCENARIOS = [
    ("1k", "/1k.bin", []),
    ("1m", "/1m.bin", []),
    ("404", "/missing", []),
    ("close", "/1k.bin", ["-H", "Connection: close"]),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d never opened" % port)


class Server:
    def __init__(self, name, argv, port, pid_of=None):
        self.name, self.port = name, port
        self.proc = subprocess.Popen(["taskset", "-c", "0"] + argv,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_port(port)
        self.pid_of = pid_of

    def worker_pid(self):
        return self.pid_of() if self.pid_of else self.proc.pid

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def children_of(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def allow_root(binary):
    """The line a root medusad needs without a user, for builds that know
    it (a --baseline from before it came would refuse the key)."""
    with open(binary, "rb") as f:
        return "allow_root = true;\n" if b"allow_root" in f.read() else ""


def start_medusa(binary, root, tmp, name="medusa"):
    port = free_port()
    conf = os.path.join(tmp, name + ".conf")
    with open(conf, "w") as f:
        f.write(allow_root(binary) + """workers = 1;
worker_connections = 20000;
log = { level = "warn"; error_log = "%s/%s.err"; };
http = ( { name = "bench"; listen = [ "127.0.0.1:%d" ];
  keepalive_requests = 1000000; keepalive_timeout = 300;
  vhosts = ( { names = [ "*" ]; handlers = (
    { type = "static"; path = "/"; root = "%s"; gzip_static = false; } ); } ); } );
""" % (tmp, name, port, root))
    return Server(name, [binary, "-c", conf], port)


def start_nginx(root, tmp, tls=None):
    """tls: (certificate, key) to serve HTTPS instead (tls_bench.py)."""
    port = free_port()
    ssl = ("  ssl_protocols TLSv1.2 TLSv1.3;\n  ssl_session_tickets on;\n"
           "  ssl_certificate %s;\n  ssl_certificate_key %s;\n" % tls if tls else "")
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""worker_processes 1;
daemon off;
master_process on;
pid %s/nginx.pid;
error_log %s/nginx.err;
worker_rlimit_nofile 20000;
events { worker_connections 20000; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  open_file_cache max=1000 inactive=60s;
  open_file_cache_valid 60s;
  open_file_cache_errors on;
  default_type application/octet-stream;
  client_body_temp_path %s; proxy_temp_path %s; fastcgi_temp_path %s;
  uwsgi_temp_path %s; scgi_temp_path %s;
%s  server { listen 127.0.0.1:%d%s; root %s; }
}
""" % ((tmp,) * 7 + (ssl, port, " ssl" if tls else "", root)))
    srv = Server("nginx", ["nginx", "-c", conf, "-p", tmp], port)
    srv.pid_of = lambda: children_of(srv.proc.pid)[0]
    return srv


def start_h2o(root, tmp, tls=None):
    if not shutil.which("h2o"):
        return None
    port = free_port()
    ssl = ("  ssl:\n    certificate-file: %s\n    key-file: %s\n" % tls if tls else "")
    conf = os.path.join(tmp, "h2o.conf")
    with open(conf, "w") as f:
        f.write("""num-threads: 1
max-connections: 20000
http1-request-timeout: 300
listen:
  host: 127.0.0.1
  port: %d
%shosts:
  default:
    paths:
      /:
        file.dir: %s
""" % (port, ssl, root))
    try:
        srv = Server("h2o", ["h2o", "-c", conf], port)
    except RuntimeError:
        return None
    # h2o may run a helper process; the server is the one listening.
    srv.pid_of = lambda: srv.proc.pid
    return srv


def wrk(port, path, extra, duration, conns):
    cmd = ["taskset", "-c", "1", "wrk", "-t1", "-c%d" % conns, "-d%ds" % duration] + extra + \
        ["http://127.0.0.1:%d%s" % (port, path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errs = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, (errs.group(1) if errs else ""), int(non2xx.group(1)) if non2xx else 0


def cpu_seconds(pid):
    """User + system CPU of a process (all its threads) so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def idle_memory(srv, n):
    """Open n keep-alive connections, one request each, and leave them idle."""
    pid = srv.worker_pid()
    time.sleep(0.3)
    before = rss_kib(pid)
    sel = selectors.DefaultSelector()
    socks, done, errors = [], 0, 0
    req = b"GET /1k.bin HTTP/1.1\r\nHost: bench\r\n\r\n"
    for i in range(n):
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", srv.port))
        except BlockingIOError:
            pass
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE, [b"", False])
        # keep the listen queue from overflowing
        while len(socks) - done > 500:
            done, errors = pump(sel, req, done, errors)
    while done < n:
        before_done = done
        done, errors = pump(sel, req, done, errors, timeout=5)
        if done == before_done:
            break
    time.sleep(0.5)
    after = rss_kib(pid)
    for s in socks:
        s.close()
    return before, after, done, errors


def pump(sel, req, done, errors, timeout=1):
    for key, ev in sel.select(timeout):
        s, st = key.fileobj, key.data
        try:
            if ev & selectors.EVENT_WRITE:
                s.send(req)
                sel.modify(s, selectors.EVENT_READ, st)
            else:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                st[0] += chunk
                if b"\r\n\r\n" in st[0] and len(st[0]) >= st[0].index(b"\r\n\r\n") + 4 + 1024:
                    sel.unregister(s)
                    done += 1
        except (ConnectionError, OSError):
            sel.unregister(s)
            errors += 1
            done += 1
    return done, errors


def print_table(servers, scenarios, data, unit, fmt, ratio_head, higher_better):
    """Medians per server, and the median of per-round ratios to nginx
    (server/nginx when higher is better, nginx/server otherwise). The ratio
    is taken within each round, whose runs sat side by side in time: that is
    steadier than a ratio of medians on a machine whose speed drifts."""
    others = [s for s in servers if s.name != "nginx"]
    print("| scenario | " + " | ".join("%s %s" % (s.name, unit) for s in servers) + " | " +
          " | ".join(ratio_head % s.name for s in others) + " |")
    print("|---" * (1 + len(servers) + len(others)) + "|")
    for name, _, _ in scenarios:
        med = {s.name: statistics.median(data[(s.name, name)]) for s in servers}
        ratio = {}
        for s in others:
            pairs = zip(data[(s.name, name)], data[("nginx", name)])
            ratio[s.name] = statistics.median(a / b if higher_better else b / a for a, b in pairs)
        print("| %s | " % name + " | ".join(fmt % med[s.name] for s in servers) + " | " +
              " | ".join("%.2f" % ratio[s.name] for s in others) + " |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("medusad")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--no-h2o", action="store_true")
    ap.add_argument("--scenarios", default=",".join(n for n, _, _ in SCENARIOS),
                    help="comma-separated subset of: 1k,1m,404,close")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--c10k", type=int, default=10000, help="connections for the concurrency run")
    ap.add_argument("--baseline", metavar="MEDUSAD",
                    help="another medusad (say, the build before a change), run as 'before' "
                         "in the same rounds, so a change is measured side by side")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="medusa-bench-")
    root = os.path.join(tmp, "www")
    os.makedirs(root)
    with open(os.path.join(root, "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    with open(os.path.join(root, "1m.bin"), "wb") as f:
        f.write(os.urandom(1 << 20))
    os.chmod(tmp, 0o755)
    servers = []
    try:
        servers.append(start_medusa(os.path.abspath(args.medusad), root, tmp))
        if args.baseline:
            servers.append(start_medusa(os.path.abspath(args.baseline), root, tmp, "before"))
        servers.append(start_nginx(root, tmp))
        if not args.no_h2o:
            h = start_h2o(root, tmp)
            if h:
                servers.append(h)
        results, costs = {}, {}
        chosen = [sc for sc in SCENARIOS if sc[0] in args.scenarios.split(",")]
        for rnd in range(args.rounds):
            # rotate who goes first, so no server always runs after another
            order = servers[rnd % len(servers):] + servers[:rnd % len(servers)]
            for name, path, extra in chosen:
                for srv in order:
                    pid = srv.worker_pid()
                    cpu0 = cpu_seconds(pid)
                    rps, errs, non2xx = wrk(srv.port, path, extra, args.duration,
                                            args.connections)
                    cpu = cpu_seconds(pid) - cpu0
                    results.setdefault((srv.name, name), []).append(rps)
                    # server CPU per request: what the server spends, whoever
                    # is the bottleneck (wrk's core often is)
                    us = cpu * 1e6 / max(rps * args.duration, 1)
                    costs.setdefault((srv.name, name), []).append(us)
                    print("round %d %-6s %-6s %10.0f req/s %7.1f us CPU/request %s" %
                          (rnd + 1, srv.name, name, rps, us, errs), flush=True)
        print()
        print_table(servers, chosen, results, "req/s", "%.0f", "%s / nginx", higher_better=True)
        print()
        print("Server CPU per request (us; lower is better), and nginx's cost over each server's:")
        print()
        print_table(servers, chosen, costs, "us", "%.1f", "nginx / %s", higher_better=False)
        for srv in servers:
            srv.stop()
        servers = []
        # Memory and concurrency on fresh servers, one at a time, so neither
        # the throughput runs' allocations nor another server's sockets
        # (TIME_WAIT from the close runs) weigh on the figures.
        starters = [lambda: start_medusa(os.path.abspath(args.medusad), root, tmp)]
        if args.baseline:
            starters.append(lambda: start_medusa(os.path.abspath(args.baseline), root, tmp,
                                                 "before"))
        starters.append(lambda: start_nginx(root, tmp))
        if not args.no_h2o and shutil.which("h2o"):
            starters.append(lambda: start_h2o(root, tmp))
        mem_rows, c10k_rows = [], []
        for start in starters:
            time.sleep(2)
            srv = start()
            if srv is None:
                continue
            servers = [srv]
            if not args.no_memory:
                before, after, done, errors = idle_memory(srv, args.idle)
                per = (after - before) * 1024 / max(done, 1)
                mem_rows.append("| %s | %d | %d | %d | %.0f | %d |" %
                                (srv.name, done, before, after, per, errors))
            time.sleep(1)
            rps, errs, non2xx = wrk(srv.port, "/1k.bin", [], args.duration, args.c10k)
            c10k_rows.append("| %s | %d | %.0f | %s | %d |" % (srv.name, args.c10k, rps,
                                                               errs or "none", non2xx))
            srv.stop()
            servers = []
        if mem_rows:
            print()
            print("| server | idle connections | RSS before KiB | RSS after KiB | bytes per connection | errors |")
            print("|---|---|---|---|---|---|")
            print("\n".join(mem_rows))
        print()
        print("| server | concurrent connections | req/s | socket errors | non-2xx |")
        print("|---|---|---|---|---|")
        print("\n".join(c10k_rows))
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
