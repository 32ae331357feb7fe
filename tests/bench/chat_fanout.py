#!/usr/bin/python3
"""End-to-end chat fan-out: N clients in the room (default 1,000), a few of
them speak, and every client reads everything. Reports lines delivered per
second. Not a test: nothing here asserts on timing.

usage: chat_fanout.py MEDUSAD [--clients N] [--messages M] [--workers W]
"""
import argparse
import os
import selectors
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("medusad")
ap.add_argument("--clients", type=int, default=1000)
ap.add_argument("--messages", type=int, default=200, help="lines said in total")
ap.add_argument("--workers", type=int, default=2)
args = ap.parse_args()

os.environ["MEDUSAD"] = os.path.abspath(args.medusad)  # the harness reads it on import
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from harness import ChatClient, Server, chat_conf, free_port  # noqa: E402

port = free_port()
srv = Server(chat_conf(listen=["127.0.0.1:%d" % port], extra="max_output = 4194304;")
             + "worker_connections = 20000;\n", workers=args.workers)
clients = []
for i in range(args.clients):
    c = ChatClient(("127.0.0.1", port))
    c.read_until(b"nickname?: ")
    c.send_line("b%04d" % i)
    clients.append(c)
for c in clients:
    c.read_until(b"* welcome")
time.sleep(0.5)
sel = selectors.DefaultSelector()
for c in clients:
    c.sock.setblocking(False)
    c.buf = b""
    c.got = 0
    sel.register(c.sock, selectors.EVENT_READ, c)
# Drain join notices first.
end = time.monotonic() + 2
while time.monotonic() < end:
    for key, _ in sel.select(0.2):
        key.data.sock.recv(1 << 20)

speakers = clients[:10]
want = args.messages * (args.clients - 1)
got = 0
t0 = time.monotonic()
for k in range(args.messages):
    speakers[k % len(speakers)].sock.sendall(b"fan-out line %d\r\n" % k)
while got < want and time.monotonic() - t0 < 120:
    for key, _ in sel.select(1):
        c = key.data
        c.buf += c.sock.recv(1 << 20)
        lines = c.buf.split(b"\r\n")
        c.buf = lines.pop()  # a partial line waits for the next read
        n = sum(1 for line in lines if b": fan-out line " in line)
        c.got += n
        got += n
dt = time.monotonic() - t0
print("| clients | workers | lines said | deliveries | seconds | deliveries/s |")
print("|---|---|---|---|---|---|")
print("| %d | %d | %d | %d | %.2f | %.0f |" % (args.clients, args.workers, args.messages, got, dt, got / dt))
if got < want:
    print("incomplete: %d of %d deliveries" % (got, want))
for c in clients:
    c.close()
srv.stop()
srv.cleanup()
