"""echo (RFC 862), the example module: bytes come back unchanged; a client
that never reads is dropped past max_output while others go on; sessions
show in 'conns' and 'stats', move when their worker leaves, and end at the
idle timeout."""
import os
import socket
import time

import pytest

from harness import Server, free_port


@pytest.fixture(scope="module")
def echo():
    port = free_port()
    srv = Server('echo = ( { name = "echo"; listen = [ "127.0.0.1:%d" ]; max_output = 65536; '
                 'idle_timeout = 2; } );\n' % port, workers=2, admin=True)
    yield srv, port
    srv.stop()


def connect(port, rcvbuf=None):
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


def roundtrip(s, data):
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(65536)
        assert chunk, "closed after %d of %d bytes" % (len(got), len(data))
        got += chunk
    return got


def test_echoes_bytes_back(echo):
    _, port = echo
    s = connect(port)
    for data in (b"hello\r\n", b"\x00\xff binary \x07", os.urandom(200000)):
        assert roundtrip(s, data) == data
    s.close()


def test_a_client_that_never_reads_is_dropped_and_others_go_on(echo):
    srv, port = echo
    hog = connect(port, rcvbuf=4096)
    hog.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    other = connect(port)
    sent = 0
    hog.settimeout(0.2)
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            sent += hog.send(b"x" * 65536)
    except (socket.timeout, BrokenPipeError, ConnectionResetError):
        pass
    srv.wait_log("echo: the client does not read; dropped at 65536 bytes")
    assert roundtrip(other, b"still here\n") == b"still here\n"
    other.close()
    hog.close()
    assert srv.ctl_json("stats")["echo"]["dropped_not_reading"] >= 1


def test_sessions_show_in_conns_and_stats(echo):
    srv, port = echo
    s = connect(port)
    assert roundtrip(s, b"abc") == b"abc"
    conns = [c for c in srv.ctl_json("conns") if c["service"] == "echo"]
    assert len(conns) == 1 and conns[0]["state"].startswith("echoing"), conns
    stats = srv.ctl_json("stats")["echo"]
    assert stats["connections_active"] == 1 and stats["bytes_echoed"] >= 3, stats
    assert "echo: connections_active 1" in srv.ctl("stats")
    s.close()


def test_a_session_moves_when_its_worker_leaves(echo):
    srv, port = echo
    sessions = [connect(port) for _ in range(6)]
    for s in sessions:
        assert roundtrip(s, b"before\n") == b"before\n"
    srv.ctl("workers", "set", "1")
    srv.wait_workers_settled()
    for s in sessions:
        assert roundtrip(s, b"after\n") == b"after\n"
    workers = {c["worker"] for c in srv.ctl_json("conns") if c["service"] == "echo"}
    assert workers == set(srv.running_workers()), workers
    srv.ctl("workers", "set", "2")
    for s in sessions:
        s.close()


def test_an_idle_session_ends_at_idle_timeout(echo):
    _, port = echo
    s = connect(port)
    t0 = time.monotonic()
    assert s.recv(10) == b""
    assert time.monotonic() - t0 < 10
