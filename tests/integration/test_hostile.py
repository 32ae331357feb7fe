"""Oversize lines, binary garbage, control characters, truncated input and
a client that never reads: each gets its proper answer or is dropped, and
well-behaved clients on the same workers notice nothing."""
import os
import socket
import threading
import time

from harness import ChatClient, Server, chat_conf, free_port, ok

port = free_port()
addr = ("127.0.0.1", port)
srv = Server(chat_conf(listen=["127.0.0.1:%d" % port],
                       extra="max_line = 256; max_output = 65536; sndbuf = 16384;"), workers=2)

good_a, good_b = ChatClient(addr), ChatClient(addr)
good_a.join("good_a")
good_b.join("good_b")
assert good_a.line() == "[good_b joined]"

# A nickname that is garbage, then a proper one.
n = ChatClient(addr)
n.read_until(b"nickname?: ")
n.sock.sendall(b"\xff\xfe bad nick\r\n")
assert b"nickname?: " in n.read_until(b"nickname?: ")
n.close()
ok("invalid nickname asked again")

# One over-long line: refused with a message, then the client goes on.
h = ChatClient(addr)
h.join("longliner")
h.sock.sendall(b"x" * 100000 + b"\r\nshort one\r\n")
assert h.line() == "* line refused: longer than 256 bytes"
assert good_a.line() == "[longliner joined]"
assert good_a.line() == "longliner: short one", "line after the refused one was lost"
ok("over-long line refused, the next line delivered")

# Control characters and NUL bytes are refused, not broadcast.
h.sock.sendall(b"bell\x07\x00here\r\n")
assert h.line() == "* line refused: control characters"
ok("control characters refused")


def flood(kind, stop):
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


stop = threading.Event()
threads = [threading.Thread(target=flood, args=(k, stop), daemon=True)
           for k in ("binary", "oversize", "truncated", "nul") for _ in range(2)]
for t in threads:
    t.start()

notices = []


def said(c, prefix=""):
    """The next line starting with prefix, skipping the flooders' join
    notices and whatever random bytes happened to form a valid line."""
    while True:
        line = c.line()
        if not line.startswith("[") and line.startswith(prefix):
            return line
        if line.startswith("["):
            notices.append(line)


t0 = time.monotonic()
for i in range(400):
    good_a.send_line("message %d %s" % (i, "z" * 200))
    assert said(good_b, "good_a:") == "good_a: message %d %s" % (i, "z" * 200)
    assert said(h, "good_a:") == "good_a: message %d %s" % (i, "z" * 200)
stop.set()
for t in threads:
    t.join()
ok("400 messages delivered in order to well-behaved clients during the flood (%.1f s)"
   % (time.monotonic() - t0))

# A client that joins and never reads while the room is busy: dropped at
# max_output; the readers get every line of the burst, in order.
slow = ChatClient(addr, rcvbuf=4096)
slow.join("slowpoke")
for c in (good_a, good_b, h):
    while c.line() != "[slowpoke joined]":
        pass
BURST = 3000
results = {}
progress = {good_b: 0, h: 0}


def read_burst(c):
    try:
        for i in range(BURST):
            assert said(c, "good_a:") == "good_a: burst %d %s" % (i, "y" * 200)
            progress[c] = i + 1
        results[c] = True
    except Exception as e:  # reported below
        results[c] = e


readers = [threading.Thread(target=read_burst, args=(c,), daemon=True) for c in (good_b, h)]
for t in readers:
    t.start()
for i in range(BURST):
    good_a.send_line("burst %d %s" % (i, "y" * 200))
    # Readers never lag more than 100 lines: only the non-reader fills up.
    deadline = time.monotonic() + 30
    while i - min(progress.values()) > 100 and not results and time.monotonic() < deadline:
        time.sleep(0.001)
for t in readers:
    t.join(60)
assert results == {good_b: True, h: True}, results
srv.wait_log("slowpoke: output buffer full")
while "[slowpoke left]" not in notices:
    notices.append(good_b.line())
ok("client that never reads was dropped at max_output; readers got all %d lines" % BURST)

# The server still serves newcomers normally.
late = ChatClient(addr)
welcome = late.join("latecomer")
assert "good_a" in welcome and "good_b" in welcome and "slowpoke" not in welcome, welcome
late.send_line("/who")
who = said(late, "* in the room")
assert who.startswith("* in the room ("), who
names = who.split(": ", 1)[1].split(", ")
assert {"good_a", "good_b", "longliner", "latecomer"} <= set(names) and "slowpoke" not in names, who
late.send_line("/nonsense")
assert said(late).startswith("* unknown command /nonsense")
ok("server healthy after the flood: %s" % who)
log = srv.log_text()
assert "over-long line refused" in log
assert srv.stop() == 0
srv.cleanup()
