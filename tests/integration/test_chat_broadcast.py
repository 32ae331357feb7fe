"""200 TCP and 5 Unix-socket chat clients on 2 workers: every broadcast
reaches every other client exactly once, never the sender, whichever worker
either of them is on."""
import collections
import os
import selectors
import time

from harness import ChatClient, Server, chat_conf, free_port

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
