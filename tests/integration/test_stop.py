"""SIGTERM: listeners close at once, sessions are told and get the grace
period, then the process exits 0; a second signal stops at once."""
import signal
import socket
import time

from harness import ChatClient, Server, chat_conf, free_port


def test_sessions_are_told_and_closed_after_the_grace_period():
    port = free_port()
    srv = Server(chat_conf(listen=["127.0.0.1:%d" % port]) + "grace_period = 2;\n", workers=2)
    users = [ChatClient(("127.0.0.1", port)) for _ in range(6)]
    for i, u in enumerate(users):
        u.join("s%d" % i)
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    srv.wait_log("stopping (grace period 2000 ms)")
    for u in users:
        assert u.read_until(b"shutting down in 2 s\r\n")
    # Every worker closes its listeners as it gets the stop; a client that
    # got in just before is served like the others, never dropped.
    deadline = time.monotonic() + 5
    while True:
        try:
            early = socket.create_connection(("127.0.0.1", port), timeout=2)
        except ConnectionRefusedError:
            break
        early.settimeout(5)
        assert early.recv(100).startswith(b"nickname?: ")
        early.close()
        assert time.monotonic() < deadline, "still accepting 5 s into the stop"
        time.sleep(0.01)
    # Sessions still work during the grace period.
    users[0].send_line("last words")
    assert "s0: last words" in users[1].read_until(b"last words\r\n").decode()
    for u in users:
        u.read_eof(timeout=10)
    assert srv.proc.wait(10) == 0
    elapsed = time.monotonic() - t0
    assert elapsed < 2 + 5, "stop took %.1f s with a 2 s grace period" % elapsed


def test_idle_server_stops_at_once():
    srv = Server(chat_conf(listen=["127.0.0.1:%d" % free_port()]) + "grace_period = 30;\n")
    t0 = time.monotonic()
    assert srv.stop(timeout=10) == 0
    assert time.monotonic() - t0 < 10


def test_a_second_signal_stops_at_once():
    port = free_port()
    srv = Server(chat_conf(listen=["127.0.0.1:%d" % port]) + "grace_period = 60;\n")
    u = ChatClient(("127.0.0.1", port))
    u.join("stayer")
    srv.signal(signal.SIGINT)
    srv.wait_log("stopping (grace period")
    srv.signal(signal.SIGINT)
    assert srv.proc.wait(10) == 0
    u.read_eof()
