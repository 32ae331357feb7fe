"""200 TCP and 5 Unix-socket chat clients on 2 workers: every broadcast
reaches every other client exactly once, never the sender, whichever worker
either of them is on."""
import collections
import os
import selectors
import socket
import time

from harness import ChatClient, Server, chat_conf, free_port, wait_for

TCP_CLIENTS, UNIX_CLIENTS, SENDERS, PER_SENDER = 200, 5, 12, 3


def test_every_broadcast_reaches_every_other_client_exactly_once():
    port = free_port()
    srv = Server("", workers=2)
    sock_path = os.path.join(srv.dir, "chat.sock")
    srv.reload(chat_conf(listen=["127.0.0.1:%d" % port, "unix:chat.sock"]))

    clients = []
    for i in range(TCP_CLIENTS):
        clients.append(ChatClient(("127.0.0.1", port)))
    for i in range(UNIX_CLIENTS):
        clients.append(ChatClient(sock_path))
    for i, c in enumerate(clients):
        c.join("u%03d" % i)

    log = srv.log_text()
    assert "joined on worker 1" in log and "joined on worker 2" in log, "clients not spread over both workers"

    # Senders from both kinds of socket.
    senders = clients[:SENDERS - 2] + clients[-2:]
    expected = collections.Counter()
    for s in senders:
        for k in range(PER_SENDER):
            text = "msg %d from %s" % (k, s.nick)
            s.send_line(text)
            expected["%s: %s" % (s.nick, text)] += 1

    received = {c.nick: collections.Counter() for c in clients}
    want = {c.nick: sum(n for m, n in expected.items() if not m.startswith(c.nick + ":")) for c in clients}
    sel = selectors.DefaultSelector()
    for c in clients:
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)


    def pump(deadline):
        while time.monotonic() < deadline:
            for key, _ in sel.select(0.1):
                c = key.data
                data = c.sock.recv(65536)
                assert data, "%s disconnected" % c.nick
                c.buf += data
                while b"\r\n" in c.buf:
                    line, c.buf = c.buf.split(b"\r\n", 1)
                    line = line.decode()
                    if line.startswith("[") or line.startswith("*"):
                        continue  # join notices of later joiners
                    received[c.nick][line] += 1
            if all(sum(received[n].values()) >= want[n] for n in received):
                return True
        return False


    assert pump(time.monotonic() + 30), "not every broadcast arrived: %s" % [
        (n, sum(received[n].values()), want[n]) for n in received if sum(received[n].values()) < want[n]][:5]
    pump(time.monotonic() + 0.5)  # anything extra (a duplicate) would show now

    for c in clients:
        for line, n in received[c.nick].items():
            assert not line.startswith(c.nick + ":"), "%s received its own line %r" % (c.nick, line)
            assert n == 1 and expected[line] == 1, "%s got %r %d times" % (c.nick, line, n)
        assert sum(received[c.nick].values()) == want[c.nick]

    for c in clients:
        c.close()
    assert srv.stop() == 0
    assert not os.path.exists(sock_path), "Unix socket left behind"
    srv.cleanup()


def quiet(c, seconds=0.5):
    """Whatever arrives within seconds (b"" if nothing does)."""
    c.sock.settimeout(seconds)
    got = b""
    try:
        while True:
            data = c.sock.recv(65536)
            if not data:
                break
            got += data
    except socket.timeout:
        pass
    c.sock.settimeout(10)
    return got


def test_a_moved_user_hears_nothing_from_before_it_joined_and_nothing_twice():
    port = free_port()
    srv = Server(chat_conf(listen=["127.0.0.1:%d" % port]), workers=2, admin=True)
    old = [ChatClient(("127.0.0.1", port)) for _ in range(6)]
    for i, c in enumerate(old):
        c.join("old%d" % i)
    for i, c in enumerate(old):  # lines in both workers' memories
        c.send_line("before %d" % i)
    srv.ctl("workers", "set", "3")
    srv.wait_workers_settled()
    u = None
    for _ in range(60):  # a newcomer on the worker that just started
        c = ChatClient(("127.0.0.1", port))
        c.read_until(b"nickname?: ")
        where = [x["worker"] for x in srv.ctl_json("conns") if "choosing" in x["state"]]
        if where == [3]:
            u = c
            break
        c.close()
        wait_for(lambda: not [x for x in srv.ctl_json("conns") if "choosing" in x["state"]], 5,
                 "the probe to close")
    assert u, "no connection landed on worker 3"
    u.send_line("newcomer")
    assert u.line().startswith("* welcome, newcomer")
    for c in old:
        while c.line() != "[newcomer joined]":
            pass
    srv.ctl("workers", "set", "2")  # worker 3 leaves: the newcomer moves
    srv.wait_workers_settled()
    assert quiet(u) == b"", "lines from before the join were replayed"
    old[0].send_line("after one move")
    assert quiet(u) == b"old0: after one move\r\n"
    # Twice more: to a new worker and back, with lines said in between.
    for step in range(2):
        srv.ctl("workers", "set", "3")
        srv.wait_workers_settled()
        old[1].send_line("step %d" % step)
        where = [x["worker"] for x in srv.ctl_json("conns") if x["state"].startswith("newcomer")]
        srv.ctl("worker", "drain", str(where[0]))
        srv.wait_workers_settled()
        old[2].send_line("moved %d" % step)
        got = b""
        while not got.endswith(b"moved %d\r\n" % step):
            chunk = quiet(u, 2)
            assert chunk, "missing lines: %r" % got
            got += chunk
        assert got == b"old1: step %d\r\nold2: moved %d\r\n" % (step, step), got
    assert srv.ctl_json("stats")["chat"]["room_users"] == 7
    for c in old + [u]:
        c.close()
    wait_for(lambda: srv.ctl_json("stats")["chat"]["room_users"] == 0, 10, "everyone gone")
    assert srv.stop() == 0
