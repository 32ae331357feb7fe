#!/usr/bin/python3
"""Reverse-proxy benchmark: medusad against HAProxy and nginx, side by side.

One backend, nginx serving a 1 KiB file. In front of it, in turn, medusad
(proxy handler), nginx (proxy_pass to an upstream with keepalive) and
HAProxy (mode http, keep-alive both sides), each with one worker/thread
pinned to CPU 0; wrk and the backend share CPU 1. Access logs are off
everywhere. Runs are interleaved (every proxy once per round, the order
rotating). Reported: median requests/s, median p99 latency, server CPU per
request, and the median of per-round ratios to HAProxy and to nginx.

    tests/bench/proxy_bench.py build/medusad [--rounds 5] [--duration 5]

Needs nginx (nginx-light), haproxy and wrk from Debian.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_bench import Server, children_of, cpu_seconds, free_port  # noqa: E402


BACKEND_CPU = "0"


def nginx_conf(tmp, name, port, body):
    conf = os.path.join(tmp, name + ".conf")
    with open(conf, "w") as f:
        f.write("""worker_processes 1;
daemon off;
master_process on;
pid %s/%s.pid;
error_log %s/%s.err;
worker_rlimit_nofile 20000;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  default_type application/octet-stream;
  client_body_temp_path %s; proxy_temp_path %s; fastcgi_temp_path %s;
  uwsgi_temp_path %s; scgi_temp_path %s;
  %s
}
""" % (tmp, name, tmp, name, tmp, tmp, tmp, tmp, tmp, body))
    return conf


def start_backend(tmp, root):
    port = free_port()
    conf = nginx_conf(tmp, "backend", port,
                      "sendfile on; open_file_cache max=100;\n"
                      "server { listen 127.0.0.1:%d; root %s; }" % (port, root))
    srv = Server("backend", ["nginx", "-c", conf, "-p", tmp], port)
    if BACKEND_CPU != "0":
        for pid in [srv.proc.pid] + children_of(srv.proc.pid):
            subprocess.run(["taskset", "-a", "-p", "-c", BACKEND_CPU, str(pid)],
                           capture_output=True)
    return srv


def start_medusa(binary, tmp, backend):
    port = free_port()
    conf = os.path.join(tmp, "medusa.conf")
    with open(conf, "w") as f:
        f.write("""workers = 1;
allow_root = true;
worker_connections = 20000;
log = { level = "warn"; error_log = "%s/medusa.err"; };
upstreams = ( { name = "app"; servers = [ "127.0.0.1:%d" ]; keepalive = 64;
                keepalive_requests = 1000000; } );
http = ( { name = "bench"; listen = [ "127.0.0.1:%d" ];
  keepalive_requests = 1000000; keepalive_timeout = 300;
  vhosts = ( { handlers = ( { type = "proxy"; path = "/"; upstream = "app"; } ); } ); } );
""" % (tmp, backend, port))
    return Server("medusa", [binary, "-c", conf], port)


def start_nginx(tmp, backend):
    port = free_port()
    conf = nginx_conf(tmp, "nginx", port, """
  upstream app { server 127.0.0.1:%d; keepalive 64; keepalive_requests 1000000; }
  server { listen 127.0.0.1:%d;
    location / { proxy_pass http://app; proxy_http_version 1.1;
                 proxy_set_header Connection ""; proxy_buffering on; } }""" % (backend, port))
    srv = Server("nginx", ["nginx", "-c", conf, "-p", tmp], port)
    srv.pid_of = lambda: children_of(srv.proc.pid)[0]
    return srv


def start_haproxy(tmp, backend):
    port = free_port()
    conf = os.path.join(tmp, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write("""global
  nbthread 1
  maxconn 9000
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
frontend fe
  bind 127.0.0.1:%d
  default_backend be
backend be
  http-reuse always
  server s1 127.0.0.1:%d
""" % (port, backend))
    return Server("haproxy", ["haproxy", "-db", "-f", conf], port)


def wrk(port, duration, conns):
    cmd = ["taskset", "-c", "1", "wrk", "-t1", "-c%d" % conns, "-d%ds" % duration, "--latency",
           "http://127.0.0.1:%d/1k.bin" % port]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: (.*)", out)
    return rps, p99, (int(bad.group(1)) if bad else 0), (errs.group(1) if errs else "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("medusad")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--backend-cpu", default="0",
                    help="where the backend runs: 0 beside the proxy (default), 1 beside wrk")
    args = ap.parse_args()
    global BACKEND_CPU
    BACKEND_CPU = args.backend_cpu
    tmp = tempfile.mkdtemp(prefix="medusa-proxybench-")
    root = os.path.join(tmp, "www")
    os.makedirs(root)
    with open(os.path.join(root, "1k.bin"), "wb") as f:
        f.write(os.urandom(1024))
    os.chmod(tmp, 0o755)
    servers = []
    try:
        backend = start_backend(tmp, root)
        servers.append(backend)
        proxies = []
        for start in (lambda: start_medusa(os.path.abspath(args.medusad), tmp, backend.port),
                      lambda: start_haproxy(tmp, backend.port),
                      lambda: start_nginx(tmp, backend.port)):
            proxies.append(start())
            servers.append(proxies[-1])  # stopped at the end even if a later one fails
        rps, p99, cpu = {}, {}, {}
        for rnd in range(args.rounds):
            order = proxies[rnd % len(proxies):] + proxies[:rnd % len(proxies)]
            for p in order:
                pid = p.worker_pid()
                c0 = cpu_seconds(pid)
                r, lat, bad, errs = wrk(p.port, args.duration, args.connections)
                us = (cpu_seconds(pid) - c0) * 1e6 / max(r * args.duration, 1)
                rps.setdefault(p.name, []).append(r)
                p99.setdefault(p.name, []).append(lat)
                cpu.setdefault(p.name, []).append(us)
                print("round %d %-8s %9.0f req/s  p99 %6.2f ms  %5.1f us CPU/request %s%s" %
                      (rnd + 1, p.name, r, lat, us, "non-2xx %d " % bad if bad else "", errs),
                      flush=True)
        print()
        print("| proxy | req/s | p99 ms | CPU us/request | req/s vs HAProxy | req/s vs nginx |")
        print("|---|---|---|---|---|---|")
        for p in proxies:
            ratio = {}
            for other in ("haproxy", "nginx"):
                ratio[other] = statistics.median(
                    a / b for a, b in zip(rps[p.name], rps[other]))
            print("| %s | %.0f | %.2f | %.1f | %.2f | %.2f |" % (
                p.name, statistics.median(rps[p.name]), statistics.median(p99[p.name]),
                statistics.median(cpu[p.name]), ratio["haproxy"], ratio["nginx"]))
    finally:
        for s in servers:
            s.stop()


if __name__ == "__main__":
    main()
