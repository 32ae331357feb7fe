"""Live scaling loses nothing and nobody notices it.

Under load (wrk and keep-alive http.client clients, chat users talking,
echo sessions), 'workers set' cycles, 'worker drain' and 'worker restart':
  - no request fails, read errors included (no keep-alive promise broken);
  - no chat user is disconnected or told anything, and every line reaches
    every user exactly once, in order, though users move between workers;
  - echo sessions move with their bytes;
  - each listener's sockets stay bounded: exactly one per running worker
    when the kernel migrates a closed socket's queue
    (net.ipv4.tcp_migrate_req = 1), otherwise never more than the most
    workers that ever ran, spread as evenly as that allows;
  - descriptors are back to their starting count once clients leave.

The two kernel modes are tested each in a network namespace of its own
(unshare -n, loopback up, the sysctl set), which needs root, as CI has.
"""
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest

from harness import (MEDUSAD, ChatClient, Server, free_port, listening_sockets, site, temp_dir,
                     wait_for)

HERE = os.path.dirname(os.path.abspath(__file__))


class HTTPLoad(threading.Thread):
    """One keep-alive http.client connection, reused for as long as the
    server keeps it; no retries: any error is a failure."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.stop, self.ok, self.failures = port, False, 0, []

    def run(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self.stop:
            try:
                c.request("GET", "/index.html")
                r = c.getresponse()
                body = r.read()
                if r.status != 200 or body != b"hello\n" or r.getheader("connection") == "close":
                    self.failures.append((r.status, r.getheader("connection")))
                self.ok += 1
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.failures.append(repr(e))
                c.close()
        c.close()


class Talker(threading.Thread):
    """A chat user saying numbered lines."""

    def __init__(self, user):
        super().__init__(daemon=True)
        self.user, self.stop, self.said = user, False, 0

    def run(self):
        while not self.stop:
            self.user.send_line("line %d" % self.said)
            self.said += 1
            time.sleep(0.004)


class Listener(threading.Thread):
    """A chat user checking that it hears every numbered line exactly once,
    in order, and nothing else (no notice, no disconnection)."""

    def __init__(self, user, speaker):
        super().__init__(daemon=True)
        self.user, self.speaker, self.next, self.problems = user, speaker, 0, []
        self.done = False

    def run(self):
        prefix = self.speaker + ": line "
        try:
            while not self.done:
                try:
                    line = self.user.line(timeout=1)
                except socket.timeout:
                    continue
                if line.startswith(prefix):
                    n = int(line[len(prefix):])
                    if n != self.next:
                        self.problems.append("expected line %d, got %d" % (self.next, n))
                    self.next = n + 1
                elif not line.startswith("["):  # joins and departures are fine
                    self.problems.append("unexpected: %r" % line)
        except Exception as e:  # noqa: BLE001
            self.problems.append(repr(e))


class Echoer(threading.Thread):
    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.stop, self.rounds, self.problems = port, False, 0, []

    def run(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        try:
            while not self.stop:
                msg = b"ping %d\n" % self.rounds
                s.sendall(msg)
                got = b""
                while len(got) < len(msg):
                    d = s.recv(100)
                    if not d:
                        raise EOFError("echo session closed")
                    got += d
                if got != msg:
                    self.problems.append((msg, got))
                self.rounds += 1
                time.sleep(0.01)
        except Exception as e:  # noqa: BLE001
            self.problems.append(repr(e))
        s.close()


def wrk(port, seconds):
    return subprocess.Popen(["wrk", "-t2", "-c32", "-d%ds" % seconds,
                             "http://127.0.0.1:%d/index.html" % port],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wrk_result(p):
    out = p.communicate(timeout=120)[0]
    m = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return (int(m.group(1)) if m else 0, [int(x) for x in errors.groups()] if errors else [0] * 4,
            int(non2xx.group(1)) if non2xx else 0, out)


def start(workers=4):
    tmp = temp_dir()
    ports = {"http": free_port(), "chat": free_port(), "echo": free_port()}
    # No open-file cache: its descriptors would blur the count of the end.
    vhost = site(tmp).replace('root = "www";', 'root = "www"; cache_entries = 0;')
    conf = ("grace_period = 30;\n"
            'http = ( { name = "web"; listen = [ "127.0.0.1:%d" ]; keepalive_requests = 1000000;\n'
            " vhosts = ( %s ); } );\n" % (ports["http"], vhost) +
            'chat = ( { name = "chat"; listen = [ "127.0.0.1:%d" ]; idle_timeout = 0; } );\n'
            % ports["chat"] +
            'echo = ( { name = "echo"; listen = [ "127.0.0.1:%d" ]; } );\n' % ports["echo"])
    return Server(conf, workers=workers, dir=tmp, admin=True), ports


def check_sockets(srv, ports, migrate, peak):
    """Each listener's sockets, as the supervisor and the kernel count them."""
    running = srv.running_workers()
    for l in srv.ctl_json("listeners"):
        port = int(l["address"].rsplit(":", 1)[1])
        held = [n for w, n in l["held"].items() if int(w) in running]
        wait_for(lambda: listening_sockets(port) == l["sockets"], 10,
                 "the kernel to count %d sockets on %d" % (l["sockets"], port))
        if migrate:
            assert l["sockets"] == len(running) and held == [1] * len(running), (l, running)
        else:
            assert len(running) <= l["sockets"] <= peak, (l, running, peak)
            assert len(held) == len(running) and max(held) - min(held) <= 1, (l, running)
            assert sum(held) == l["sockets"], l


def soak(migrate, cycle=(2, 1, 3, 4, 1, 3, 2, 4)):
    """The whole scenario; asserts, and prints a summary line (or, when it
    fails, the end of the server's log)."""
    srv, ports = start(4)
    try:
        run_soak(srv, ports, migrate, cycle)
    except BaseException:
        print(srv.log_text()[-12000:], file=sys.stderr)
        raise


def run_soak(srv, ports, migrate, cycle):
    fds0, kinds0 = srv.settled_fds(), srv.fd_kinds()
    users = [ChatClient(("127.0.0.1", ports["chat"])) for _ in range(12)]
    for i, u in enumerate(users):
        u.join("u%02d" % i)
    for u in users[:-1]:  # everyone has heard of everyone
        while u.line() != "[u11 joined]":
            pass
    talker = Talker(users[0])
    listeners = [Listener(u, "u00") for u in users[1:]]
    echoers = [Echoer(ports["echo"]) for _ in range(4)]
    loads = [HTTPLoad(ports["http"]) for _ in range(4)]
    for t in listeners + echoers + loads + [talker]:
        t.start()
    bench = wrk(ports["http"], 12)
    wait_for(lambda: sum(t.ok for t in loads) > 200 and talker.said > 20, 30, "load running")
    peak = 4
    for n in cycle:
        assert "%d worker" % n in srv.ctl("workers", "set", str(n))
        peak = max(peak, n)
        srv.wait_workers_settled()
        before = (sum(t.ok for t in loads), talker.said)
        wait_for(lambda: sum(t.ok for t in loads) > before[0] + 100 and talker.said > before[1] + 20,
                 30, "load after workers set %d" % n)
        check_sockets(srv, ports, migrate, peak)
    # one worker drained, one restarted
    victim = srv.running_workers()[0]
    assert "leaving" in srv.ctl("worker", "drain", str(victim))
    srv.wait_workers_settled()
    victim = srv.running_workers()[-1]
    assert "took its place" in srv.ctl("worker", "restart", str(victim))
    srv.wait_workers_settled()
    assert "4 worker" in srv.ctl("workers", "set", "4")
    srv.wait_workers_settled()
    check_sockets(srv, ports, migrate, peak)
    requests, errors, non2xx, out = wrk_result(bench)
    talker.stop = True
    talker.join()
    said = talker.said
    wait_for(lambda: all(l.next == said or l.problems for l in listeners), 30,
             "every listener to hear all %d lines" % said)
    for t in echoers + loads + listeners:
        t.stop = t.done = True
    for t in echoers + loads + listeners:
        t.join(30)
    failures = [f for t in loads for f in t.failures]
    assert requests > 0 and errors == [0, 0, 0, 0] and non2xx == 0, out
    assert not failures, failures[:5]
    assert not [p for t in listeners for p in t.problems], [t.problems for t in listeners][:3]
    assert not [p for t in echoers for p in t.problems], [t.problems for t in echoers]
    stats = srv.ctl_json("stats")
    moved = sum(w["moved_in"] for w in stats["workers"])
    assert moved > 0 and stats["chat"]["room_users"] == 12, stats["chat"]
    assert "shutting down" not in srv.log_text()
    # Clients leave: the descriptors are those of the start.
    for u in users:
        u.close()
    wait_for(lambda: sum(w["active"] for w in srv.ctl_json("workers")) == 0, 20, "clients gone")
    try:
        wait_for(lambda: srv.fds() == fds0, 10, "descriptors back to %d" % fds0)
    except AssertionError:
        raise AssertionError("descriptors: %d at the start %s, %d now %s" % (
            fds0, kinds0, srv.fds(), srv.fd_kinds()))
    assert srv.stop() == 0
    print("%s: %d wrk requests and %d keep-alive requests, 0 errors; %d chat lines to 11 users "
          "exactly once; %d sessions moved; sockets bounded; %d descriptors before and after"
          % ("migrating kernel" if migrate else "non-migrating kernel", requests,
             sum(t.ok for t in loads), said, moved, fds0))


def run_in_netns(migrate, scenario="soak"):
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("a network namespace of its own needs root, unshare and ip (CI has them)")
    if not shutil.which("wrk"):
        pytest.fail("wrk is missing: packaging/bootstrap installs it")
    script = ("import sys; sys.path.insert(0, %r); import test_scaling; "
              "test_scaling.%s(%s)" % (HERE, scenario, bool(migrate)))
    cmd = ("ip link set lo up && sysctl -qw net.ipv4.tcp_migrate_req=%d && "
           "exec %s -c %s" % (migrate, sys.executable, json.dumps(script)))
    p = subprocess.run(["unshare", "-n", "sh", "-c", cmd], capture_output=True, text=True,
                       timeout=600, env=dict(os.environ, MEDUSAD=MEDUSAD))
    print(p.stdout[-3000:], p.stderr[-6000:])
    assert p.returncode == 0, p.stderr[-6000:]


def test_scaling_with_a_migrating_kernel_loses_nothing():
    run_in_netns(1)


def test_scaling_without_migration_loses_nothing_and_bounds_sockets():
    run_in_netns(0)


def cycles(migrate):
    """The scaling that made each listener's sockets grow without bound
    before (8, 1, 3, 7, 2, 5, then 3, 1, 4, 2 five times): checked after
    every step, as the supervisor and the kernel count them."""
    srv, ports = start(2)
    fds0 = srv.settled_fds()
    peak = 2
    for n in (8, 1, 3, 7, 2, 5) + (3, 1, 4, 2) * 5:
        srv.ctl("workers", "set", str(n))
        peak = max(peak, n)
        srv.wait_workers_settled()
        check_sockets(srv, ports, migrate, peak)
    srv.ctl("workers", "set", "2")
    srv.wait_workers_settled()
    # Back at 2 workers: one socket per listener and worker when they can
    # migrate, else as many as the peak (8), spread 4 and 4.
    sockets = sum(l["sockets"] for l in srv.ctl_json("listeners"))
    assert sockets == (3 * 2 if migrate else 3 * peak), sockets
    assert srv.stop() == 0
    print("%s: sockets bounded through 27 steps; %d at the end, %d descriptors at the start"
          % ("migrating kernel" if migrate else "non-migrating kernel", sockets, fds0))


def test_many_cycles_keep_sockets_bounded_with_migration():
    run_in_netns(1, "cycles")


def test_many_cycles_keep_sockets_bounded_without_migration():
    run_in_netns(0, "cycles")


def slow_download(port, path="/big.bin"):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    return s


def start_with_big_file(grace):
    tmp = temp_dir()
    vhost = site(tmp)
    with open(os.path.join(tmp, "www", "big.bin"), "wb") as f:
        f.write(os.urandom(32 << 20))
    port = free_port()
    http = 'http = ( { name = "web"; listen = [ "127.0.0.1:%d" ]; vhosts = ( %s ); } );\n' % (
        port, vhost)
    srv = Server("grace_period = %d;\n" % grace + http, workers=2, dir=tmp, admin=True)
    srv.http_conf = http
    return srv, port


def test_a_response_in_flight_finishes_on_the_leaving_worker_then_its_connection_moves():
    srv, port = start_with_big_file(grace=60)
    s = slow_download(port)
    got = s.recv(65536)
    head = got[:got.index(b"\r\n\r\n")].decode()
    assert "Connection: close" not in head
    worker = [c["worker"] for c in srv.ctl_json("conns", "web")][0]
    assert "leaving" in srv.ctl("worker", "drain", str(worker))
    want = (32 << 20) + len(head) + 4
    while len(got) < want:
        chunk = s.recv(1 << 20)
        assert chunk, "the download was cut at %d of %d bytes" % (len(got), want)
        got += chunk
        time.sleep(0.001)
    assert got[len(head) + 4:] == open(os.path.join(srv.dir, "www", "big.bin"), "rb").read()
    # The same connection asks again: answered by the worker that stays.
    s.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
    rest = b""
    while not rest.endswith(b"hello\n"):
        chunk = s.recv(4096)
        assert chunk, "closed after the download: %r" % rest
        rest += chunk
    assert rest.startswith(b"HTTP/1.1 200") and b"Connection: close" not in rest, rest
    srv.wait_workers_settled()
    assert [c["worker"] for c in srv.ctl_json("conns", "web")] != [worker]
    s.close()
    assert srv.stop() == 0


def test_a_stop_during_a_drain_takes_the_shorter_grace():
    srv, port = start_with_big_file(grace=60)
    s = slow_download(port)
    s.recv(65536)
    worker = [c["worker"] for c in srv.ctl_json("conns", "web")][0]
    srv.ctl("worker", "drain", str(worker))
    assert "configuration reloaded" in srv.reload("grace_period = 2;\n" + srv.http_conf)
    t0 = time.monotonic()
    srv.signal(15)
    assert srv.proc.wait(20) == 0
    assert time.monotonic() - t0 < 15, "the leaving worker kept the 60 s grace"
    s.close()
