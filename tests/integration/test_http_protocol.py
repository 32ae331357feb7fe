"""HTTP/1.x protocol behaviour with raw sockets and http.client: pipelining,
HTTP/1.0 keep-alive rules, 100-continue, chunked bodies, every limit, every
request-smuggling vector, slow and stalled clients, idle timeouts for 500
connections, while other clients keep being served."""
import http.client
import os
import socket
import threading
import time
import types

import pytest

from harness import RawHTTP, Server, free_port, http_conf, rss_kib, temp_dir, wait_for

port = free_port()


class Bystander(threading.Thread):
    """Keeps fetching a file over keep-alive; every answer must be right."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = False
        self.count = 0
        self.failures = []

    def run(self):
        while not self.stop:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                for _ in range(4):  # keepalive_requests is 5
                    c.request("GET", "/a.txt")
                    r = c.getresponse()
                    body = r.read()
                    if r.status != 200 or body != b"A" * 100:
                        self.failures.append((r.status, body[:50]))
                    self.count += 1
                c.close()
            except Exception as e:  # noqa: BLE001 - any failure is recorded
                self.failures.append(repr(e))
            time.sleep(0.005)


def expect_refused(data, status, what):
    c = RawHTTP(port)
    c.send(data)
    r = c.response()
    assert r.status == status, (what, r.status)
    assert r.header("connection") == "close", (what, r.headers)
    assert c.closed(), what + ": connection left open"
    c.close()


@pytest.fixture(scope="module")
def env():
    tmp = temp_dir()
    www = os.path.join(tmp, "www")
    os.makedirs(www)
    os.makedirs(os.path.join(tmp, "up"))
    for name, ch in [("a.txt", b"A"), ("b.txt", b"B"), ("c.txt", b"C")]:
        with open(os.path.join(www, name), "wb") as f:
            f.write(ch * 100)
    with open(os.path.join(www, "huge.bin"), "wb") as f:
        f.write(os.urandom(32 << 20))
    vhosts = """{ names = [ "*" ]; handlers = (
        { type = "put"; path = "/up/"; root = "up"; },
        { type = "static"; path = "/"; root = "www"; }
      ); }"""
    limits = ("max_uri = 1024; max_header_size = 2048; max_headers = 20; max_body = 10000; "
              "header_timeout = 1; body_timeout = 1; keepalive_timeout = 2; send_timeout = 3; "
              "keepalive_requests = 5;")
    srv = Server(http_conf(port, vhosts, limits), workers=2, dir=tmp)
    bystander = Bystander()
    bystander.start()
    env = types.SimpleNamespace(tmp=tmp, www=www, srv=srv, bystander=bystander)
    yield env
    env.bystander.stop = True
    env.bystander.join()
    env.srv.stop()


def test_pipelined_requests_are_answered_in_order(env):
    # Pipelining: three requests in one write, answered in order.
    c = RawHTTP(port)
    c.send(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /b.txt HTTP/1.1\r\nHost: x\r\n\r\n"
           b"GET /c.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    assert [c.response().body[:1] for _ in range(3)] == [b"A", b"B", b"C"]
    # ... and split at awkward places
    req = b"GET /b.txt HTTP/1.1\r\nHost: x\r\n\r\n" * 2
    for i in range(0, len(req)):
        c.send(req[i:i + 1])
    assert c.response().body[:1] == b"B" and c.response().body[:1] == b"B"
    c.close()


def test_http_1_0_keepalive_rules(env):
    # HTTP/1.0: closes unless asked to keep alive.
    c = RawHTTP(port)
    c.send(b"GET /a.txt HTTP/1.0\r\n\r\n")
    r = c.response()
    assert r.status == 200 and r.version == "HTTP/1.1" and c.closed()
    c = RawHTTP(port)
    c.send(b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    r = c.response()
    assert r.header("connection") == "keep-alive"
    c.send(b"GET /b.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert c.response().body[:1] == b"B"
    c.send(b"GET /c.txt HTTP/1.0\r\n\r\n")
    assert c.response().body[:1] == b"C" and c.closed()
    # HTTP/1.1 with Connection: close
    c = RawHTTP(port)
    c.send(b"GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    r = c.response()
    assert r.header("connection") == "close" and c.closed()


def test_upgrade_is_ignored_and_connect_refused(env):
    # Upgrade is ignored (no 101; the next request is HTTP); CONNECT is refused and closes.
    c = RawHTTP(port)
    c.send(b"GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
           b"GET /b.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    r1, r2 = c.response(), c.response()
    assert (r1.status, r1.body[:1], r2.status, r2.body[:1]) == (200, b"A", 200, b"B")
    c.close()
    c = RawHTTP(port)
    c.send(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01tunnel")
    r = c.response()
    assert r.status == 405 and r.header("connection") == "close" and c.closed()
    assert b"HTTP/1.1" not in c.buf  # nothing after: the tunnel bytes were not parsed


def test_keepalive_requests_closes_after_the_last(env):
    # keepalive_requests = 5: the fifth answer says close.
    c = RawHTTP(port)
    for i in range(5):
        c.send(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.response()
        assert (r.header("connection") == "close") == (i == 4), (i, r.headers)
    assert c.closed()


def test_expect_100_continue_and_chunked_bodies(env):
    tmp = env.tmp
    # 100-continue and chunked bodies.
    c = RawHTTP(port)
    c.send(b"PUT /up/x.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    r = c.response(head_only=True)
    assert r.status == 100, r.status
    c.send(b"hello")
    r = c.response()
    assert r.status == 201 and open(os.path.join(tmp, "up", "x.bin"), "rb").read() == b"hello"
    c.send(b"PUT /up/y.bin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\n")
    r = c.response()
    assert r.status == 201 and open(os.path.join(tmp, "up", "y.bin"), "rb").read() == b"hello world"
    body = (b"PUT /up/w.bin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    for i in range(len(body)):  # every CRLF split across reads
        c.send(body[i:i + 1])
        time.sleep(0.002)
    r = c.response()
    assert r.status == 201 and open(os.path.join(tmp, "up", "w.bin"), "rb").read() == b"abcde"
    c.send(b"PUT /up/z.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\nExpect: 100-continue\r\n\r\n")
    r = c.response()
    assert r.status == 413 and c.closed()  # no 100, and the body is not read
    c = RawHTTP(port)
    c.send(b"GET /a.txt HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\n\r\n")
    assert c.response().status == 417
    c.close()


def test_limits_414_431_413_408(env):
    tmp = env.tmp
    # Limits.
    expect_refused(b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "long URI")
    expect_refused(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 3000 + b"\r\n\r\n", 431,
                   "big header")
    expect_refused(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(30)) +
                   b"\r\n", 431, "many headers")
    expect_refused(b"PUT /up/big HTTP/1.1\r\nHost: x\r\nContent-Length: 10001\r\n\r\n", 413,
                   "declared body")
    expect_refused(b"PUT /up/big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
                   (b"1000\r\n" + b"z" * 4096 + b"\r\n") * 3, 413, "chunked body")
    assert not os.path.exists(os.path.join(tmp, "up", "big"))
    # header timeout: a slow head gets 408 after header_timeout even if it trickles
    c = RawHTTP(port)
    t0 = time.monotonic()
    c.send(b"GET / HTTP/1.1\r\n")
    for _ in range(3):
        time.sleep(0.4)
        try:
            c.send(b"X-Slow: y\r\n")
        except OSError:
            break
    r = c.response()
    assert r.status == 408 and c.closed() and time.monotonic() - t0 < 4, r.status
    # body timeout
    c = RawHTTP(port)
    c.send(b"PUT /up/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
    r = c.response()
    assert r.status == 408 and c.closed()
    assert not os.path.exists(os.path.join(tmp, "up", "slow"))


def test_smuggling_and_malformed_requests_get_400_and_close(env):
    tmp = env.tmp
    srv = env.srv
    # Request smuggling and malformed requests: 400 and close, every one.
    vectors = {
        "CL and TE": b"POST /up/s HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "TE and CL": b"POST /up/s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
        "duplicate CL": b"PUT /up/s HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        "differing CL": b"PUT /up/s HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        "negative CL": b"PUT /up/s HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        "CL with junk": b"PUT /up/s HTTP/1.1\r\nHost: x\r\nContent-Length: 3x\r\n\r\nabc",
        "CL list": b"PUT /up/s HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
        "bad chunk size": b"PUT /up/s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        "negative chunk": b"PUT /up/s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nabc\r\n0\r\n\r\n",
        "huge chunk": b"PUT /up/s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nabc\r\n",
        "chunk without CRLF": b"PUT /up/s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
        "TE not chunked last": b"PUT /up/s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        "TE obfuscated": b"PUT /up/s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
        "obs-fold": b"GET /a.txt HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n b\r\n\r\n",
        "obs-fold tab": b"GET /a.txt HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n\tb\r\n\r\n",
        "bare LF": b"GET /a.txt HTTP/1.1\nHost: x\n\n",
        "bare LF in headers": b"GET /a.txt HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",
        "NUL in header": b"GET /a.txt HTTP/1.1\r\nHost: x\r\nX-Nul: a\x00b\r\n\r\n",
        "space before colon": b"GET /a.txt HTTP/1.1\r\nHost : x\r\n\r\n",
        "two Hosts": b"GET /a.txt HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        "no Host in 1.1": b"GET /a.txt HTTP/1.1\r\n\r\n",
        "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(64) + b"\r\n\r\n",
        "bad version": b"GET /a.txt HTTP/9.9\r\nHost: x\r\n\r\n",
        "bad method": b"G@T /a.txt HTTP/1.1\r\nHost: x\r\n\r\n",
        "CR in value": b"GET /a.txt HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
        "CR as an empty value": b"GET /a.txt HTTP/1.1\r\nHost: x\r\nX: \r\r\n\r\n",
        "CR as an empty value, no space": b"GET /a.txt HTTP/1.1\r\nHost: x\r\nX:\r\r\n\r\n",
        "CR before the end": b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\r\n",
        "CR in the request line": b"GET /a.txt\r HTTP/1.1\r\nHost: x\r\n\r\n",
    }
    for what, data in vectors.items():
        c = RawHTTP(port)
        c.send(data)
        try:
            r = c.response()
        except EOFError:
            raise AssertionError(what + ": closed without an answer")
        if what == "bad version":
            assert r.status in (400, 505), (what, r.status)
        else:
            assert r.status == 400, (what, r.status, r.body[:80])
        assert r.header("connection") == "close", what
        assert c.closed(), what + ": left open"
        c.close()
    assert not os.path.exists(os.path.join(tmp, "up", "s"))
    srv.wait_log("request refused: 400 Bad Request")


def test_mutation_storm_gets_well_formed_answers(env):
    srv = env.srv
    # Mutation storm: valid requests with random bytes flipped, inserted,
    # removed or cut short, from 8 threads; every answer is a well-formed
    # HTTP response (or a close), and the server keeps serving.
    import random
    rng = random.Random(1234)
    templates = [
        b"GET /a.txt?x=1 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nIf-None-Match: \"x\"\r\n\r\n",
        b"PUT /up/m.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"PUT /up/m.bin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"GET /%2e/a.txt HTTP/1.0\r\nConnection: keep-alive\r\nAccept-Encoding: gzip\r\n\r\n",
    ]
    cases = []
    for i in range(800):
        d = bytearray(rng.choice(templates) * rng.choice([1, 1, 2]))
        for _ in range(rng.randint(1, 4)):
            if not d:
                break
            op, pos = rng.randint(0, 3), rng.randrange(max(len(d), 1))
            if op == 0:
                d[pos] = rng.randrange(256)
            elif op == 1:
                d[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            elif op == 2:
                del d[pos:pos + rng.randint(1, 8)]
            else:
                d = d[:pos]
        cases.append(bytes(d))
    bad = []

    def storm(part):
        for d in part:
            try:
                s = socket.create_connection(("127.0.0.1", port), 5)
                s.sendall(d)
                s.shutdown(socket.SHUT_WR)
                got = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                s.close()
            except (ConnectionResetError, BrokenPipeError):
                continue
            except socket.timeout:
                bad.append(("timeout", d))
                continue
            if got and not got.startswith(b"HTTP/1.1 "):
                bad.append((got[:40], d))
    threads = [threading.Thread(target=storm, args=(cases[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad, bad[:3]
    assert srv.proc.poll() is None
    c = RawHTTP(port)
    c.send(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.response().status == 200
    c.close()


def test_stalled_downloads_hold_bounded_memory_and_time_out(env):
    srv = env.srv
    bystander = env.bystander
    # A client that stops reading mid-download: memory stays bounded, others served,
    # and send_timeout (3 s) closes it.
    base_rss = rss_kib(srv.proc.pid)
    stalled = []
    for _ in range(10):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET /huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        s.recv(1000)
        stalled.append(s)
    time.sleep(1.0)
    grown = rss_kib(srv.proc.pid) - base_rss
    assert grown < 8 * 1024, "RSS grew %d KiB for 10 stalled 32 MiB downloads" % grown
    count = bystander.count
    wait_for(lambda: bystander.count > count + 20, 10, "bystander progress")
    srv.wait_log("send timed out", timeout=10)

    def all_closed():
        for s in stalled:
            s.setblocking(False)
            try:
                while True:
                    d = s.recv(1 << 20)
                    if not d:
                        break
            except BlockingIOError:
                return False
            except ConnectionResetError:
                pass
        return True
    wait_for(all_closed, 10, "stalled clients closed")
    for s in stalled:
        s.close()


def test_a_slow_reader_gets_the_whole_file(env):
    www = env.www
    # A slow reader that keeps reading gets the whole file even when the
    # download lasts longer than send_timeout (it runs between writes).
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    got, t0 = b"", time.monotonic()
    want = open(os.path.join(www, "huge.bin"), "rb").read()
    while b"\r\n\r\n" not in got or len(got) - got.index(b"\r\n\r\n") - 4 < len(want):
        chunk = s.recv(256 * 1024)
        assert chunk, "closed after %d bytes, %.1f s" % (len(got), time.monotonic() - t0)
        got += chunk
        time.sleep(0.006)
    took = time.monotonic() - t0
    s.close()
    assert got[got.index(b"\r\n\r\n") + 4:] == want
    assert took > 3, took


def test_idle_keepalive_and_silent_connections_close_on_schedule(env):
    # 500 idle keep-alive connections are closed on schedule (keepalive_timeout = 2 s),
    # and 100 silent ones at header_timeout (1 s).
    idle = []
    for _ in range(500):
        c = RawHTTP(port)
        c.send(b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        idle.append(c)
    for c in idle:
        assert c.response().status == 200
    silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
    t0 = time.monotonic()
    for c in idle:
        c.sock.setblocking(False)
    for s in silent:
        s.setblocking(False)

    def closed_count(socks):
        n = 0
        for s in socks:
            try:
                if s.recv(4096) == b"":
                    n += 1
            except BlockingIOError:
                pass
            except ConnectionResetError:
                n += 1
        return n
    time.sleep(0.6)
    assert closed_count([c.sock for c in idle]) == 0, "closed before keepalive_timeout"
    wait_for(lambda: closed_count(silent) == 100, 5, "silent connections closed")
    closed = set()

    def all_idle_closed():
        for i, c in enumerate(idle):
            if i in closed:
                continue
            try:
                if c.sock.recv(4096) == b"":
                    closed.add(i)
            except BlockingIOError:
                pass
            except ConnectionResetError:
                closed.add(i)
        return len(closed) == len(idle)
    wait_for(all_idle_closed, 10, "idle keep-alive connections closed")
    t_idle = time.monotonic() - t0
    assert 1.5 <= t_idle <= 5, t_idle
    for c in idle:
        c.close()
    for s in silent:
        s.close()


def test_a_bystander_was_served_right_throughout(env):
    bystander = env.bystander
    wait_for(lambda: bystander.count > 100, 30, "bystander requests")
    bystander.stop = True
    bystander.join()
    assert not bystander.failures, bystander.failures[:5]
    assert bystander.count > 100
