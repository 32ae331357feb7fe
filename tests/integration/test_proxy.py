"""The reverse proxy, with real backends (tests/integration/backend.py, a
threaded HTTP/1.1 server run as its own process; and a second medusad):
forwarding and its headers, keep-alive pools, balancing, failover, 502/504,
DNS names through a test DNS server, streaming big bodies in bounded
memory, WebSocket tunnels, smuggling, health shared by every worker, the
console's upstream commands, and scaling while proxying."""
import hashlib
import http.client
import json
import os
import socket
import struct
import subprocess
import threading
import time

from harness import (MEDUSAD, RawHTTP, Server, curl, free_port, rss_kib, sanitized, site, temp_dir,
                     wait_for)

HERE = os.path.dirname(os.path.abspath(__file__))


class Backend:
    def __init__(self, name, port=None, host="127.0.0.1"):
        self.name, self.host = name, host
        self.port = port or free_port()
        self.proc = subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "backend.py"),
                                      str(self.port), name, host], stdout=subprocess.PIPE)
        assert self.proc.stdout.readline().strip() == b"ready"

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def get(self, path):
        c = http.client.HTTPConnection(self.host, self.port, timeout=10)
        c.request("GET", path)
        data = c.getresponse().read()
        c.close()
        return data

    def stats(self):
        return json.loads(self.get("/_stats"))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.kill()


def conf(port, servers, upstream_extra="", handler_extra="", http_extra="", path="/"):
    srv = ", ".join('"%s"' % s for s in servers)
    return ('upstreams = ( { name = "app"; servers = [ %s ]; %s } );\n'
            'http = ( { name = "web"; listen = [ "127.0.0.1:%d" ]; access_log = "access.log"; %s\n'
            '  vhosts = ( { handlers = ( { type = "status"; path = "/status"; },\n'
            '                            { type = "proxy"; path = "%s"; upstream = "app"; %s } ); } ); } );\n'
            % (srv, upstream_extra, port, http_extra, path, handler_extra))


def get(port, path, headers=None, method="GET", body=None, timeout=20):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data


def test_forwarding_and_headers():
    tmp = temp_dir()
    with Backend("a") as b:
        port = free_port()
        s = Server(conf(port, [b.addr], handler_extra="strip_prefix = true;", path="/api/"),
                   dir=tmp, admin=True)
        try:
            st, h, body = get(port, "/api/echo?x=1", headers={
                "X-Forwarded-For": "10.9.8.7", "Connection": "X-Secret, keep-alive",
                "X-Secret": "hop", "Keep-Alive": "timeout=5", "TE": "trailers",
                "Proxy-Authorization": "Basic Zm9vOmJhcg==", "Via": "1.0 edge",
                "X-Custom": "kept", "Date": "Sat, 28 Nov 2026 12:00:00 GMT",
                "Host": "example.test"})
            assert st == 200 and h["x-backend"] == "a", (st, h)
            info = json.loads(body)
            hdrs = {k.lower(): v for k, v in info["headers"]}
            assert info["path"] == "/echo?x=1"
            assert hdrs["x-forwarded-for"] == "10.9.8.7, 127.0.0.1"
            assert hdrs["x-forwarded-proto"] == "http"
            assert hdrs["x-forwarded-host"] == "example.test"
            assert hdrs["host"] == "example.test"
            assert hdrs["via"] == "1.0 edge, 1.1 medusa"
            assert hdrs["x-custom"] == "kept"
            assert hdrs["date"] == "Sat, 28 Nov 2026 12:00:00 GMT"  # end-to-end, not ours
            for gone in ("x-secret", "keep-alive", "te", "proxy-authorization"):
                assert gone not in hdrs, (gone, hdrs)
            assert info["version"] == "HTTP/1.1"
            # response: the backend's headers, our Server and Date, framing re-done
            assert h["server"] == "medusa" and "date" in h and h["content-length"] == str(len(body))
            # a prefix written with escapes still strips (the normalised path)
            st, h, body = get(port, "/%61pi/echo")
            assert st == 200 and json.loads(body)["path"] == "/echo"
            # HEAD, statuses without bodies, an interim-free 404
            st, h, body = get(port, "/api/big?n=5000", method="HEAD")
            assert st == 200 and body == b"" and h["content-length"] == "5000"
            for code in (204, 304, 404, 418):
                st, h, body = get(port, "/api/code/%d" % code)
                assert st == code and body == b""
            # a request body with Content-Length, and chunked from the client
            st, h, body = get(port, "/api/upload", method="POST", body=b"x" * 100000)
            assert json.loads(body)["length"] == 100000
            raw = RawHTTP(port)
            raw.send(b"POST /api/upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                     b"Expect: 100-continue\r\n\r\n")
            r = raw.response(head_only=True)
            assert r.status == 100
            raw.send(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            r = raw.response()
            assert r.status == 200 and json.loads(r.body) == {
                "length": 11, "sha256": hashlib.sha256(b"hello world").hexdigest()}
            # HTTP/1.0 client, chunked upstream response: delimited by close
            raw = RawHTTP(port)
            raw.send(b"GET /api/big?n=70000&chunked=1 HTTP/1.0\r\n\r\n")
            assert raw.closed()
            head, _, data = raw.buf.partition(b"\r\n\r\n")
            assert b"200" in head.split(b"\r\n")[0] and len(data) == 70000
            assert b"transfer-encoding" not in head.lower()
            # HTTP/1.1 client: chunked
            st, h, body = get(port, "/api/big?n=200000&chunked=1")
            assert st == 200 and len(body) == 200000 and h.get("transfer-encoding") == "chunked"
            st, h, body = get(port, "/api/big?n=100000&close=1")
            assert st == 200 and len(body) == 100000
            log = open(os.path.join(tmp, "access.log")).read()
            assert "upstream=%s upstream_status=200 upstream_time=" % b.addr in log, log
        finally:
            s.stop()


def test_keepalive_pool_reuses_connections():
    tmp = temp_dir()
    with Backend("a") as b:
        port = free_port()
        s = Server(conf(port, [b.addr], upstream_extra="keepalive = 8;"), dir=tmp, workers=2,
                   admin=True)
        try:
            before = b.stats()["conns"]
            for i in range(20):
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                for k in range(10):
                    c.request("GET", "/echo")
                    r = c.getresponse()
                    assert r.status == 200
                    r.read()
                c.close()
            st = b.stats()
            # 200 requests; a pool per worker, requests one at a time
            assert st["conns"] - before <= 4, st
            ups = s.ctl_json("upstreams")
            assert ups[0]["requests"] >= 200 and ups[0]["idle"] >= 1, ups
        finally:
            s.stop()


def test_balancing_round_robin_and_least_connections():
    tmp = temp_dir()
    with Backend("a") as a, Backend("b") as b:
        port = free_port()
        s = Server(conf(port, [a.addr, b.addr]), dir=tmp, workers=1, admin=True)
        try:
            seen = [get(port, "/echo")[1]["x-backend"] for _ in range(20)]
            assert seen.count("a") == 10 and seen.count("b") == 10, seen
        finally:
            s.stop()
        port = free_port()
        text = ('upstreams = ( { name = "app"; balance = "least-connections"; servers = ( '
                '{ address = "%s"; weight = 1; }, "%s" ); } );\n' % (a.addr, b.addr))
        text += conf(port, [a.addr]).split("\n", 1)[1]
        s = Server(text, dir=temp_dir(), workers=1, admin=True)
        try:
            # a long request on one server: the next ones go to the other
            t = threading.Thread(target=get, args=(port, "/slow?ms=1500"))
            t.start()
            time.sleep(0.3)
            seen = [get(port, "/echo")[1]["x-backend"] for _ in range(6)]
            t.join()
            assert len(set(seen)) == 1, seen  # all to the idle one
            seen = [get(port, "/echo")[1]["x-backend"] for _ in range(6)]
            assert set(seen) == {"a", "b"}, seen  # ties are spread
        finally:
            s.stop()


def test_weights():
    tmp = temp_dir()
    with Backend("a") as a, Backend("b") as b:
        port = free_port()
        text = ('upstreams = ( { name = "app"; servers = ( { address = "%s"; weight = 3; }, "%s" ); } );\n'
                % (a.addr, b.addr)) + conf(port, [a.addr]).split("\n", 1)[1]
        s = Server(text, dir=tmp, workers=1)
        try:
            seen = [get(port, "/echo")[1]["x-backend"] for _ in range(40)]
            assert seen.count("a") == 30 and seen.count("b") == 10, seen
        finally:
            s.stop()


def test_failover_when_a_backend_dies():
    tmp = temp_dir()
    with Backend("a") as a, Backend("b") as b:
        port = free_port()
        s = Server(conf(port, [a.addr, b.addr], upstream_extra="max_fails = 2; fail_timeout = 30;"),
                   dir=tmp, workers=2, admin=True)
        errors, done = [], [0]
        stop = threading.Event()

        def client():
            c = None
            while not stop.is_set():
                try:
                    if c is None:
                        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                    c.request("GET", "/echo")
                    r = c.getresponse()
                    r.read()
                    if r.status != 200:
                        errors.append(r.status)
                    done[0] += 1
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))
                    c = None
        try:
            threads = [threading.Thread(target=client) for _ in range(4)]
            for t in threads:
                t.start()
            wait_for(lambda: done[0] > 200, 20, "requests before the kill")
            a.kill()
            n = done[0]
            wait_for(lambda: done[0] > n + 400, 30, "requests after the kill")
            stop.set()
            for t in threads:
                t.join()
            assert not errors, errors[:5]
            # marked down (by a worker, told to all through the supervisor)
            wait_for(lambda: s.ctl_json("upstreams")[0]["state"] == "down", 10, "a marked down")
            assert "server down" in s.log_text()
            # and every worker avoids it: no new failures
            f = s.ctl_json("upstreams")[0]["failures"]
            for _ in range(20):
                assert get(port, "/echo")[0] == 200
            assert s.ctl_json("upstreams")[0]["failures"] == f
        finally:
            stop.set()
            s.stop()


def test_502_and_504():
    tmp = temp_dir()
    with Backend("slow") as b:
        port = free_port()
        dead = free_port()
        s = Server(conf(port, ["127.0.0.1:%d" % dead]), dir=tmp, admin=True)
        try:
            st, h, body = get(port, "/echo")
            assert st == 502
            st, h, body = get(port, "/echo", method="POST", body=b"z" * 1000)
            assert st == 502
        finally:
            s.stop()
        port = free_port()
        s = Server(conf(port, [b.addr], upstream_extra="read_timeout = 1;"), dir=temp_dir())
        try:
            t0 = time.monotonic()
            st, h, body = get(port, "/slow?ms=4000")
            took = time.monotonic() - t0
            assert st == 504 and 0.9 <= took < 3.5, (st, took)
            assert get(port, "/slow?ms=10")[0] == 200  # the server is fine
        finally:
            s.stop()
        # a connect that hangs: a listener that never accepts, backlog full
        hang = socket.socket()
        hang.bind(("127.0.0.1", 0))
        hang.listen(0)
        fillers = []
        for _ in range(8):
            f = socket.socket()
            f.setblocking(False)
            try:
                f.connect(hang.getsockname())
            except BlockingIOError:
                pass
            fillers.append(f)
        port = free_port()
        s = Server(conf(port, ["127.0.0.1:%d" % hang.getsockname()[1]],
                        upstream_extra="connect_timeout = 1;"), dir=temp_dir())
        try:
            t0 = time.monotonic()
            st = get(port, "/echo")[0]
            took = time.monotonic() - t0
            assert st == 504 and took < 3.5, (st, took)
        finally:
            s.stop()
            for f in fillers:
                f.close()
            hang.close()


def test_interim_responses_and_stale_pooled_connections():
    """A 103 from the upstream is not passed on (the 200 after it is); a
    pooled connection the server closes when it is reused is retried on a
    fresh one, invisibly."""
    lsn = socket.socket()
    lsn.bind(("127.0.0.1", 0))
    lsn.listen(16)
    conns = []

    def serve():
        c, _ = lsn.accept()
        conns.append(c)
        c.recv(65536)
        c.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
                  b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
        c.recv(65536)  # the second request on the pooled connection: dropped
        c.close()
        c2, _ = lsn.accept()  # the retry, on a fresh connection
        conns.append(c2)
        c2.recv(65536)
        c2.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
        c2.close()
    t = threading.Thread(target=serve)
    t.start()
    tmp = temp_dir()
    port = free_port()
    s = Server(conf(port, ["127.0.0.1:%d" % lsn.getsockname()[1]]), dir=tmp, workers=1)
    try:
        raw = RawHTTP(port)
        raw.send(b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n")
        r = raw.response()
        assert r.status == 200 and r.body == b"first"  # the 103 stayed behind
        raw.sock.close()
        st, h, body = get(port, "/two")
        assert st == 200 and body == b"second"
        assert len(conns) == 2
    finally:
        s.stop()
        t.join()
        lsn.close()


def test_bad_upstream_responses_give_502():
    lsn = socket.socket()
    lsn.bind(("127.0.0.1", 0))
    lsn.listen(16)
    replies = [b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
               b"", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"]

    def serve():
        for rep in replies:
            c, _ = lsn.accept()
            c.recv(65536)
            if rep:
                c.sendall(rep)
            c.close()
    t = threading.Thread(target=serve)
    t.start()
    tmp = temp_dir()
    port = free_port()
    s = Server(conf(port, ["127.0.0.1:%d" % lsn.getsockname()[1]],
                    upstream_extra="max_fails = 0;"), dir=tmp)
    try:
        for i in range(3):
            st, h, body = get(port, "/x", method="POST", body=b"1")
            assert st == 502, (i, st)
        # truncated body after the head went out: the client sees the cut
        raw = RawHTTP(port)
        raw.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        assert raw.closed()
        assert raw.buf.startswith(b"HTTP/1.1 200") and raw.buf.endswith(b"short")
        assert "bad response" in s.log_text() or "upstream" in s.log_text()
    finally:
        s.stop()
        t.join()
        lsn.close()


class DNS:
    """A tiny UDP DNS server: A records from self.records (name -> ip), TTL 1."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.records = {}
        self.queries = 0
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:
                return
            self.queries += 1
            qid, flags, qd = struct.unpack(">HHH", data[:6])
            i, labels = 12, []
            while data[i]:
                labels.append(data[i + 1:i + 1 + data[i]].decode())
                i += 1 + data[i]
            qtype = struct.unpack(">H", data[i + 1:i + 3])[0]
            question = data[12:i + 5]
            name = ".".join(labels).lower()
            ip = self.records.get(name)
            if ip and qtype == 1:
                ans = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 1, 4) + socket.inet_aton(ip)
                reply = struct.pack(">HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + ans
            else:
                reply = struct.pack(">HHHHHH", qid, 0x8183 if not ip else 0x8180, 1, 0, 0, 0) + question
            self.sock.sendto(reply, peer)

    def close(self):
        self.sock.close()


def test_dns_names_resolved_and_re_resolved():
    dns = DNS()
    port_b = free_port()
    tmp = temp_dir()
    with Backend("two", port_b, "127.0.0.2") as b2, \
            Backend("three", port_b, "127.0.0.3") as b3:
        dns.records["app.test"] = "127.0.0.2"
        port = free_port()
        s = Server(conf(port, ["app.test:%d" % port_b],
                        upstream_extra='resolver = "127.0.0.1:%d";' % dns.port), dir=tmp,
                   workers=2, admin=True)
        try:
            assert get(port, "/echo")[1]["x-backend"] == "two"
            assert get(port, "/echo")[1]["x-backend"] == "two"
            dns.records["app.test"] = "127.0.0.3"
            wait_for(lambda: all(get(port, "/echo")[1]["x-backend"] == "three" for _ in range(4)),
                     10, "requests to follow the new address")
            assert "app.test is 127.0.0.3" in s.log_text()
            assert b2.stats()["requests"] >= 2 and b3.stats()["requests"] >= 4
        finally:
            s.stop()
            dns.close()
    tmp = temp_dir()
    # a name that does not resolve: 502, logged
    dns = DNS()
    port = free_port()
    s = Server(conf(port, ["nowhere.test:80"],
                    upstream_extra='resolver = "127.0.0.1:%d";' % dns.port), dir=tmp)
    try:
        assert get(port, "/echo")[0] == 502
        assert "cannot resolve nowhere.test" in s.log_text()
    finally:
        s.stop()
        dns.close()


def test_gigabyte_both_ways_in_bounded_memory():
    tmp = temp_dir()
    with Backend("a") as b:
        port = free_port()
        s = Server(conf(port, [b.addr], handler_extra="max_body = 2000000000;"), dir=tmp,
                   workers=1)
        try:
            # Sanitizer builds are several times slower and their memory is
            # mostly the sanitizer's: there, a smaller run without the bound.
            gib = (64 << 20) if sanitized() else (1 << 30)
            peak = [0]
            stop = threading.Event()

            def watch():
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_kib(s.pid))
                    time.sleep(0.05)
            w = threading.Thread(target=watch)
            w.start()
            out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                                  "http://127.0.0.1:%d/big?n=%d" % (port, gib)],
                                 capture_output=True, text=True, timeout=300)
            assert out.stdout == "200 %d" % gib, out
            # upload: a generated GiB, its SHA-256 checked by the backend
            h = hashlib.sha256()
            block = bytes(range(256)) * 4096
            for _ in range(gib // len(block)):
                h.update(block)
            gen = subprocess.Popen(["/usr/bin/python3", "-c",
                                    "import sys\nb=bytes(range(256))*4096\n"
                                    "for _ in range(%d): sys.stdout.buffer.write(b)" % (gib // len(block))],
                                   stdout=subprocess.PIPE)
            # (chunked: curl does not know the length of a pipe)
            out = subprocess.run(["curl", "-s", "-T", "-", "-X", "POST",
                                  "http://127.0.0.1:%d/upload" % port],
                                 stdin=gen.stdout, capture_output=True, timeout=300)
            gen.stdout.close()
            gen.kill()
            gen.wait()
            assert json.loads(out.stdout) == {"length": gib, "sha256": h.hexdigest()}, out
            # and with Content-Length (a raw client that writes as fast as it can)
            c = socket.create_connection(("127.0.0.1", port), timeout=60)
            c.sendall(b"PUT /upload HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % gib)
            for _ in range(gib // len(block)):
                c.sendall(block)
            resp = b""
            while b"}" not in resp:
                resp += c.recv(65536)
            c.close()
            assert json.loads(resp.partition(b"\r\n\r\n")[2]) == \
                {"length": gib, "sha256": h.hexdigest()}, resp
            stop.set()
            w.join()
            if not sanitized():
                assert peak[0] < 64 * 1024, "RSS peaked at %d KiB" % peak[0]
            print("peak RSS %d KiB" % peak[0])
        finally:
            s.stop()


def test_client_that_stops_reading_does_not_grow_memory():
    tmp = temp_dir()
    with Backend("a") as b:
        port = free_port()
        s = Server(conf(port, [b.addr]), dir=tmp, workers=1)
        try:
            base = rss_kib(s.pid)
            c = socket.socket()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            c.connect(("127.0.0.1", port))
            c.sendall(b"GET /big?n=500000000 HTTP/1.1\r\nHost: a\r\n\r\n")
            time.sleep(3)
            grown = rss_kib(s.pid) - base
            assert grown < 16 * 1024, "grew by %d KiB" % grown
            assert get(port, "/echo")[0] == 200  # others are served meanwhile
            c.close()
        finally:
            s.stop()


def ws_frame(text):
    data = text.encode()
    mask = os.urandom(4)
    return bytes([0x81, 0x80 | len(data)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def test_websocket_tunnel():
    tmp = temp_dir()
    with Backend("a") as b:
        port = free_port()
        s = Server(conf(port, [b.addr], handler_extra="tunnel_timeout = 2;"), dir=tmp,
                   admin=True)
        try:
            c = socket.create_connection(("127.0.0.1", port), timeout=10)
            c.sendall(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += c.recv(4096)
            head, _, rest = buf.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101"), head
            assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head and b"upgrade: websocket" in head.lower()
            for msg in ("hello", "world" * 20):
                c.sendall(ws_frame(msg))
                want = ("echo: " + msg).encode()
                while len(rest) < 2 + len(want):
                    rest += c.recv(4096)
                assert rest[2:2 + len(want)] == want, rest
                rest = rest[2 + len(want):]
            conns = s.ctl("conns")
            assert "tunnel" in conns, conns
            # quiet for longer than tunnel_timeout: closed
            c.settimeout(6)
            assert c.recv(10) == b""
            assert "tunnel idle" in s.log_text()
        finally:
            s.stop()


def test_smuggling_vectors_never_reach_the_backend_as_two_requests():
    tmp = temp_dir()
    with Backend("a") as b:
        port = free_port()
        s = Server(conf(port, [b.addr]), dir=tmp, workers=1)
        try:
            vectors = [
                b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
                b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\n"
                b"GET /smuggled HTTP/1.1\r\n\r\n",
                b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabcXX0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
                b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
                b"0\r\n\r\n",
                b"GET /echo HTTP/1.1\r\nHost: a\r\n Transfer-Encoding: chunked\r\n\r\n",
            ]
            before = b.stats()["requests"]
            for v in vectors:
                raw = RawHTTP(port)
                raw.send(v)
                r = raw.response()
                assert r.status in (400, 501), (v, r.status)
                assert raw.closed()
            after = b.stats()["requests"]
            assert after - before == 1  # only the stats call itself
            # a legitimate pipelined pair goes through as exactly two requests
            raw = RawHTTP(port)
            raw.send(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
                     b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
            r1, r2 = raw.response(), raw.response()
            assert json.loads(r1.body)["body_length"] == 5 and json.loads(r2.body)["method"] == "GET"
        finally:
            s.stop()


def test_health_checks_disable_enable_and_scaling():
    tmp = temp_dir()
    with Backend("a") as a, Backend("b") as b:
        port = free_port()
        s = Server(conf(port, [a.addr, b.addr],
                        upstream_extra='health_check = { interval = 0.3; path = "/health"; '
                                       'status = 200; timeout = 1; }; max_fails = 1;'),
                   dir=tmp, workers=3, admin=True)
        try:
            a.get("/_health/down")
            wait_for(lambda: s.ctl_json("upstreams")[0]["state"] == "down", 10, "check marks a down")
            n = a.stats()["requests"]
            for _ in range(30):  # every worker avoids it
                assert get(port, "/echo")[1]["x-backend"] == "b"
            assert a.stats()["requests"] - n <= 12  # only health checks (and the stats call)
            a.get("/_health/up")
            wait_for(lambda: s.ctl_json("upstreams")[0]["state"] == "up", 10, "check brings a back")
            wait_for(lambda: "a" in {get(port, "/echo")[1]["x-backend"] for _ in range(6)}, 10,
                     "a used again")
            # disable drains: in-flight requests finish, nothing new arrives
            errors, done = [], [0]
            stop = threading.Event()

            def client(path):
                while not stop.is_set():
                    try:
                        st = get(port, path)[0]
                        if st != 200:
                            errors.append(st)
                        done[0] += 1
                    except Exception as e:  # noqa: BLE001
                        errors.append(repr(e))
            threads = [threading.Thread(target=client, args=(p,))
                       for p in ("/slow?ms=300", "/echo", "/echo", "/slow?ms=100")]
            for t in threads:
                t.start()
            wait_for(lambda: done[0] > 30, 20, "load")
            out = s.ctl("upstream", "disable", a.addr)
            assert "disabled" in out
            time.sleep(0.6)  # in-flight ones finish
            n = a.stats()["requests"]
            k = done[0]
            wait_for(lambda: done[0] > k + 40, 20, "more load")
            assert a.stats()["requests"] - n <= 2  # the stats calls only
            assert s.ctl_json("upstreams")[0]["state"] == "disabled"
            # scaling while proxying loses nothing
            s.ctl("workers", "set", "1")
            s.wait_workers_settled()
            s.ctl("workers", "set", "3")
            k = done[0]
            wait_for(lambda: done[0] > k + 40, 20, "load after scaling")
            # a worker that started after the disable knows it too
            n = a.stats()["requests"]
            k = done[0]
            wait_for(lambda: done[0] > k + 40, 20, "more load")
            assert a.stats()["requests"] - n <= 2
            s.ctl("upstream", "enable", "app/" + a.addr)
            wait_for(lambda: a.stats()["requests"] - n > 10, 20, "a back in use")
            stop.set()
            for t in threads:
                t.join()
            assert not errors, errors[:5]
            # figures: the console's JSON, /metrics and the status page
            st, h, body = get(port, "/status")
            assert b"Upstreams" in body and a.addr.encode() in body
            st, h, body = get(port, "/metrics")
            assert b'medusa_upstream_up{upstream="app",server="%s"} 1' % a.addr.encode() in body
            assert b"# TYPE medusa_upstream_requests_total counter" in body
            assert len(s.ctl_json("upstreams")[0]["workers"]) == 3
        finally:
            s.stop()


def test_medusad_as_backend():
    """A second medusad (static files) behind the proxy: keep-alive,
    sendfile bodies and its own 404s come through."""
    tmp, tmp2 = temp_dir(), temp_dir()
    vhost = site(tmp2, "from the backend\n")
    root = os.path.join(tmp2, "www")
    bport = free_port()
    back = Server('http = ( { name = "files"; listen = [ "127.0.0.1:%d", "unix:web.sock" ];\n'
                  ' vhosts = ( %s ); } );\n' % (bport, vhost), dir=tmp2)
    big = os.path.join(root, "big.bin")
    with open(big, "wb") as f:
        f.write(os.urandom(3 << 20))
    port = free_port()
    s = Server(conf(port, ["127.0.0.1:%d" % bport]), dir=tmp)
    try:
        st, h, body = curl("http://127.0.0.1:%d/" % port)[:3]
        assert st == 200 and body == b"from the backend\n"
        st, h, body = curl("http://127.0.0.1:%d/big.bin" % port)[:3]
        assert st == 200 and body == open(big, "rb").read()
        st = curl("http://127.0.0.1:%d/nope" % port)[0]
        assert st == 404
        # 304 through the proxy
        lm = h["last-modified"]
        st = curl("-H", "If-Modified-Since: " + lm, "http://127.0.0.1:%d/big.bin" % port)[0]
        assert st == 304
    finally:
        s.stop()
    # the same backend over its Unix socket
    port = free_port()
    s = Server(conf(port, ["unix:" + os.path.join(tmp2, "web.sock")]), dir=temp_dir())
    try:
        st, h, body = curl("http://127.0.0.1:%d/big.bin" % port)[:3]
        assert st == 200 and body == open(big, "rb").read()
        log = open(os.path.join(s.dir, "access.log")).read()
        assert "upstream=unix:" in log, log
    finally:
        s.stop()
        back.stop()


def test_config_errors():
    tmp = temp_dir()
    for text, want in [
        (conf(1, ["127.0.0.1:1"]).replace('upstream = "app"', 'upstream = "nope"'),
         "no upstream named 'nope'"),
        (conf(1, ["bad host:1"]), "bad server"),
        (conf(1, ["127.0.0.1:1"], upstream_extra='balance = "random";'), "balance is"),
        (conf(1, ["127.0.0.1:1", "127.0.0.1:1"]), "listed twice"),
        (conf(1, ["127.0.0.1:1"], upstream_extra="unknown_key = 1;"), "unknown key"),
    ]:
        path = os.path.join(tmp, "m.conf")
        with open(path, "w") as f:
            f.write(text)
        out = subprocess.run([MEDUSAD, "-t", "-c", path], capture_output=True, text=True)
        assert out.returncode == 1 and want in out.stderr and "m.conf:" in out.stderr, \
            (want, out.stderr)
