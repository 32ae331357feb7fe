"""Oversize lines, binary garbage, control characters, truncated input and
a client that never reads: each gets its proper answer or is dropped, and
well-behaved clients on the same workers notice nothing."""
import os
import socket
import threading
import time

import pytest

from harness import ChatClient, Server, chat_conf, free_port


class Room:
    """A server with two well-behaved users and one that sends long lines."""

    def __init__(self):
        port = free_port()
        self.addr = ("127.0.0.1", port)
        self.srv = Server(chat_conf(listen=["127.0.0.1:%d" % port],
                                    extra="max_line = 256; max_output = 65536; sndbuf = 16384;"),
                          workers=2)
        self.good_a, self.good_b, self.h = (ChatClient(self.addr) for _ in range(3))
        self.good_a.join("good_a")
        self.good_b.join("good_b")
        self.h.join("longliner")
        for line in ("[good_b joined]", "[longliner joined]"):
            assert self.good_a.line() == line
        assert self.good_b.line() == "[longliner joined]"
        self.notices = []

    def said(self, c, prefix=""):
        """The next line starting with prefix, skipping join notices and
        whatever random bytes of a flooder happened to form a valid line."""
        while True:
            line = c.line()
            if not line.startswith("[") and line.startswith(prefix):
                return line
            if line.startswith("["):
                self.notices.append(line)


@pytest.fixture(scope="module")
def room():
    r = Room()
    yield r
    for c in (r.good_a, r.good_b, r.h):
        c.close()
    r.srv.stop()
    r.srv.cleanup()


def test_an_invalid_nickname_is_asked_again(room):
    n = ChatClient(room.addr)
    n.read_until(b"nickname?: ")
    n.sock.sendall(b"\xff\xfe bad nick\r\n")
    assert b"nickname?: " in n.read_until(b"nickname?: ")
    n.close()


def test_an_overlong_line_is_refused_and_the_next_one_delivered(room):
    room.h.sock.sendall(b"x" * 100000 + b"\r\nshort one\r\n")
    assert room.h.line() == "* line refused: longer than 256 bytes"
    assert room.said(room.good_a) == "longliner: short one", "line after the refused one was lost"
    assert "over-long line refused" in room.srv.log_text()


def test_control_characters_are_refused(room):
    room.h.sock.sendall(b"bell\x07\x00here\r\n")
    assert room.h.line() == "* line refused: control characters"


def flood(addr, kind, stop):
    """Hostile clients hammering the server in the background."""
    while not stop.is_set():
        try:
            s = socket.create_connection(addr, timeout=5)
            if kind == "binary":
                s.sendall(os.urandom(65536))
            elif kind == "oversize":
                s.sendall(b"n\r\n" + b"A" * 200000)
            elif kind == "truncated":
                s.sendall(b"half a li")
            elif kind == "nul":
                s.sendall(b"\x00" * 10000 + b"\r\n" * 100)
            s.close()
        except OSError:
            pass


def test_messages_arrive_in_order_during_a_flood(room):
    stop = threading.Event()
    threads = [threading.Thread(target=flood, args=(room.addr, k, stop), daemon=True)
               for k in ("binary", "oversize", "truncated", "nul") for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(400):
            room.good_a.send_line("message %d %s" % (i, "z" * 200))
            want = "good_a: message %d %s" % (i, "z" * 200)
            assert room.said(room.good_b, "good_a:") == want
            assert room.said(room.h, "good_a:") == want
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_a_client_that_never_reads_is_dropped_and_readers_get_everything(room):
    slow = ChatClient(room.addr, rcvbuf=4096)
    slow.join("slowpoke")
    for c in (room.good_a, room.good_b, room.h):
        while c.line() != "[slowpoke joined]":
            pass
    burst = 3000
    results = {}
    progress = {room.good_b: 0, room.h: 0}

    def read_burst(c):
        try:
            for i in range(burst):
                assert room.said(c, "good_a:") == "good_a: burst %d %s" % (i, "y" * 200)
                progress[c] = i + 1
            results[c] = True
        except Exception as e:  # noqa: BLE001 - reported below
            results[c] = e

    readers = [threading.Thread(target=read_burst, args=(c,), daemon=True)
               for c in (room.good_b, room.h)]
    for t in readers:
        t.start()
    for i in range(burst):
        room.good_a.send_line("burst %d %s" % (i, "y" * 200))
        # Readers never lag more than 100 lines: only the non-reader fills up.
        deadline = time.monotonic() + 30
        while i - min(progress.values()) > 100 and not results and time.monotonic() < deadline:
            time.sleep(0.001)
    for t in readers:
        t.join(60)
    assert results == {room.good_b: True, room.h: True}, results
    room.srv.wait_log("slowpoke: output buffer full")
    while "[slowpoke left]" not in room.notices:
        room.notices.append(room.good_b.line())


def test_newcomers_are_served_normally_afterwards(room):
    late = ChatClient(room.addr)
    welcome = late.join("latecomer")
    assert "good_a" in welcome and "good_b" in welcome and "slowpoke" not in welcome, welcome
    late.send_line("/who")
    who = room.said(late, "* in the room")
    assert who.startswith("* in the room ("), who
    names = who.split(": ", 1)[1].split(", ")
    assert {"good_a", "good_b", "longliner", "latecomer"} <= set(names), who
    assert "slowpoke" not in names, who
    late.send_line("/nonsense")
    assert room.said(late).startswith("* unknown command /nonsense")
    late.close()
