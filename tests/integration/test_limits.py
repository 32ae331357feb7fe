"""worker_connections pauses accepting (clients wait in the kernel queue,
none is dropped), idle timeouts close quiet sessions, SIGUSR2 logs the
per-worker statistics gathered through the queues, SIGUSR1 reopens logs."""
import os
import signal
import socket

from harness import ChatClient, Server, chat_conf, free_port, wait_for


def start(extra, conns=3):
    port = free_port()
    srv = Server(chat_conf(listen=["127.0.0.1:%d" % port], extra=extra)
                 + "worker_connections = %d;\n" % conns, workers=1)
    return srv, ("127.0.0.1", port)


def test_worker_connections_queues_the_next_client_until_a_slot_frees():
    srv, addr = start("idle_timeout = 0;")
    held = [ChatClient(addr) for _ in range(3)]
    for c in held:
        c.read_until(b"nickname?: ")
    waiting = ChatClient(addr)  # completes the TCP handshake in the kernel queue
    waiting.sock.settimeout(0.5)
    try:
        data = waiting.sock.recv(100)
        raise AssertionError("accepted beyond worker_connections: %r" % data)
    except socket.timeout:
        pass
    held[0].close()
    waiting.read_until(b"nickname?: ", timeout=5)
    assert srv.stop() == 0


def test_idle_sessions_are_told_and_closed():
    srv, addr = start("idle_timeout = 1.5;", conns=100)
    users = [ChatClient(addr) for _ in range(4)]
    for c in users:
        out = c.read_eof(timeout=10)
        assert b"idle timeout" in out, out
    assert srv.stop() == 0


def test_sigusr2_logs_statistics_gathered_from_the_workers():
    srv, addr = start("idle_timeout = 0;")
    gone = [ChatClient(addr) for _ in range(3)]
    for c in gone:
        c.read_until(b"nickname?: ")
        c.close()
    u = ChatClient(addr)
    u.join("counter")
    u.send_line("/who")
    u.line()
    wait_for(lambda: srv.log_text().count("chat: joined as counter"), 5, "join")
    srv.signal(signal.SIGUSR2)
    srv.wait_log("stats total:")
    line = [l for l in srv.log_text().splitlines() if "stats total:" in l][-1]
    fields = dict(kv.split("=") for kv in line.split("stats total: ")[1].split())
    assert int(fields["accepted"]) == 4 and int(fields["active"]) == 1, line
    assert int(fields["bytes_in"]) > 0 and int(fields["bytes_out"]) > 0, line
    assert "stats worker 1:" in srv.log_text()
    u.close()
    assert srv.stop() == 0


def test_sigusr1_reopens_the_error_log():
    srv, _ = start("")
    os.rename(srv.log, srv.log + ".1")
    srv.signal(signal.SIGUSR1)
    wait_for(lambda: os.path.exists(srv.log), 5, "new log file")
    srv.wait_log("log files reopened")
    assert srv.stop() == 0
