#!/usr/bin/python3
"""TLS benchmark: medusad against nginx and h2o, side by side, same
certificate (ECDSA P-256), same files, TLS 1.3 as the clients choose.

Each server gets one worker pinned to CPU 0, the load is pinned to CPU 1,
runs are interleaved (the order rotating each round); rates are medians,
ratios the median of per-round ratios to nginx. Rows:

  full      new connection per request, full handshake
            (openssl s_time -new: a handshake, one GET, close; four at once)
  resumed   new connection per request, resumed from a ticket
            (openssl s_time -reuse; four at once)
  1k        1 KiB keep-alive requests over TLS (wrk, 50 connections)
  1m        1 MiB responses over TLS (wrk, 10 connections), in MB/s

Beside each rate, the server's CPU per request or handshake (what the
server spends, whoever is the bottleneck). Then, on fresh servers, the RSS
growth per idle TLS keep-alive connection (N connections, one request each,
left open).

    tests/bench/tls_bench.py build/medusad [--rounds 5] [--duration 5] [--idle 2000]

Needs nginx, h2o and wrk from Debian (packaging/bootstrap installs them).
"""
import argparse
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import http_bench  # noqa: E402
from http_bench import Server, cpu_seconds, free_port, print_table, rss_kib  # noqa: E402

SCENARIOS = [
    ("full", "handshakes/s"),
    ("resumed", "handshakes/s"),
    ("1k", "req/s"),
    ("1m", "MB/s"),
]


def make_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-nodes", "-days", "30", "-subj", "/CN=localhost",
                    "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    os.chmod(key, 0o600)
    return cert, key


def start_medusa(binary, root, tmp, cert, key, name="medusa"):
    port = free_port()
    conf = os.path.join(tmp, name + ".conf")
    with open(conf, "w") as f:
        f.write("""workers = 1;
allow_root = true;
worker_connections = 20000;
log = { level = "warn"; error_log = "%s/%s.err"; };
http = ( { name = "bench"; tls_listen = [ "127.0.0.1:%d" ];
  tls = { certificate = "%s"; key = "%s"; };
  keepalive_requests = 1000000; keepalive_timeout = 300;
  vhosts = ( { names = [ "*" ]; handlers = (
    { type = "static"; path = "/"; root = "%s"; gzip_static = false; } ); } ); } );
""" % (tmp, name, port, cert, key, root))
    return Server(name, [binary, "-c", conf], port)


def start_nginx(root, tmp, cert, key):
    return http_bench.start_nginx(root, tmp, tls=(cert, key))


def start_h2o(root, tmp, cert, key):
    return http_bench.start_h2o(root, tmp, tls=(cert, key))


CLIENTS = 4


def s_time(port, mode, duration):
    """openssl s_time, CLIENTS of them at once (one alone waits on each
    round trip and measures latency, not the server): connections per
    second, each with one GET."""
    procs = [subprocess.Popen(["taskset", "-c", "1", "openssl", "s_time", "-connect",
                               "127.0.0.1:%d" % port, mode, "-time", str(duration), "-www",
                               "/1k.bin"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              text=True) for _ in range(CLIENTS)]
    rate, total = 0.0, 0
    for p in procs:
        out = p.communicate(timeout=duration + 60)[0]
        m = re.search(r"(\d+) connections in ([\d.]+) real seconds", out)
        rate += int(m.group(1)) / float(m.group(2))
        total += int(m.group(1))
    return rate, total


def wrk(port, path, duration, conns):
    cmd = ["taskset", "-c", "1", "wrk", "-t1", "-c%d" % conns, "-d%ds" % duration,
           "https://127.0.0.1:%d%s" % (port, path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rps, int(rps * duration)


def run(srv, name, duration):
    """(rate, events): events is what the server's CPU is divided by."""
    if name == "full":
        return s_time(srv.port, "-new", duration)
    if name == "resumed":
        return s_time(srv.port, "-reuse", duration)
    if name == "1k":
        return wrk(srv.port, "/1k.bin", duration, 50)
    rps, n = wrk(srv.port, "/1m.bin", duration, 10)
    return rps * (1 << 20) / 1e6, n


def idle_tls_memory(srv, n, cafile):
    """n TLS keep-alive connections, one request each, left open."""
    pid = srv.worker_pid()
    time.sleep(0.3)
    before = rss_kib(pid)
    ctx = ssl.create_default_context(cafile=cafile)
    socks, errors = [], 0
    req = b"GET /1k.bin HTTP/1.1\r\nHost: bench\r\n\r\n"
    for i in range(n):
        try:
            s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", srv.port), timeout=10),
                                server_hostname="localhost")
            s.sendall(req)
            got = b""
            while b"\r\n\r\n" not in got or len(got) < got.index(b"\r\n\r\n") + 4 + 1024:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                got += chunk
            socks.append(s)
        except OSError:
            errors += 1
    time.sleep(0.5)
    after = rss_kib(pid)
    for s in socks:
        s.close()
    return before, after, len(socks), errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("medusad")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--idle", type=int, default=2000)
    ap.add_argument("--no-h2o", action="store_true")
    ap.add_argument("--scenarios", default=",".join(n for n, _ in SCENARIOS))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="medusa-tlsbench-")
    root = os.path.join(tmp, "www")
    os.makedirs(root)
    with open(os.path.join(root, "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    with open(os.path.join(root, "1m.bin"), "wb") as f:
        f.write(os.urandom(1 << 20))
    os.chmod(tmp, 0o755)
    cert, key = make_cert(tmp)
    binary = os.path.abspath(args.medusad)
    servers = []
    try:
        servers.append(start_medusa(binary, root, tmp, cert, key))
        servers.append(start_nginx(root, tmp, cert, key))
        if not args.no_h2o:
            h = start_h2o(root, tmp, cert, key)
            if h:
                servers.append(h)
        chosen = [(n, u) for n, u in SCENARIOS if n in args.scenarios.split(",")]
        results, costs = {}, {}
        for rnd in range(args.rounds):
            order = servers[rnd % len(servers):] + servers[:rnd % len(servers)]
            for name, unit in chosen:
                for srv in order:
                    pid = srv.worker_pid()
                    cpu0 = cpu_seconds(pid)
                    rate, events = run(srv, name, args.duration)
                    cpu = cpu_seconds(pid) - cpu0
                    us = cpu * 1e6 / max(events, 1)
                    results.setdefault((srv.name, name), []).append(rate)
                    costs.setdefault((srv.name, name), []).append(us)
                    print("round %d %-6s %-8s %10.1f %-12s %7.1f us CPU each" %
                          (rnd + 1, srv.name, name, rate, unit, us), flush=True)
        rows = [(n, None, None) for n, _ in chosen]
        print()
        print("Rates (handshakes/s for full and resumed, req/s for 1k, MB/s for 1m):")
        print()
        print_table(servers, rows, results, "", "%.1f", "%s / nginx", higher_better=True)
        print()
        print("Server CPU per handshake or request (us; lower is better), nginx's over each:")
        print()
        print_table(servers, rows, costs, "us", "%.1f", "nginx / %s", higher_better=False)
        for srv in servers:
            srv.stop()
        servers = []
        starters = [lambda: start_medusa(binary, root, tmp, cert, key),
                    lambda: start_nginx(root, tmp, cert, key)]
        if not args.no_h2o:
            starters.append(lambda: start_h2o(root, tmp, cert, key))
        mem = []
        for start in starters:
            time.sleep(1)
            srv = start()
            if srv is None:
                continue
            servers = [srv]
            before, after, done, errors = idle_tls_memory(srv, args.idle, cert)
            mem.append("| %s | %d | %d | %d | %.0f | %d |" %
                       (srv.name, done, before, after, (after - before) * 1024 / max(done, 1),
                        errors))
            srv.stop()
            servers = []
        print()
        print("| server | idle TLS connections | RSS before KiB | RSS after KiB | bytes per connection | errors |")
        print("|---|---|---|---|---|---|")
        print("\n".join(mem))
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
