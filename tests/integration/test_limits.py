"""worker_connections pauses accepting (clients wait in the kernel queue,
none is dropped), idle timeouts close quiet sessions, SIGUSR2 logs the
per-worker statistics gathered through the queues, SIGUSR1 reopens logs."""
import os
import signal
import socket
import time

from harness import ChatClient, Server, chat_conf, free_port, ok, wait_for

port = free_port()
addr = ("127.0.0.1", port)
srv = Server(chat_conf(listen=["127.0.0.1:%d" % port], extra="idle_timeout = 1.5;")
             + "worker_connections = 3;\n", workers=1)

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
ok("at worker_connections the 4th client waits")
held[0].close()
waiting.read_until(b"nickname?: ", timeout=5)
ok("it is served as soon as a slot frees")

# Idle timeout: everyone connected above goes quiet and is told.
for c in held[1:] + [waiting]:
    out = c.read_eof(timeout=10)
    assert b"idle timeout" in out, out
ok("idle sessions closed after idle_timeout")

u = ChatClient(addr)
u.join("counter")
u.send_line("/who")
u.line()
srv.signal(signal.SIGUSR2)
srv.wait_log("stats total:")
line = [l for l in srv.log_text().splitlines() if "stats total:" in l][-1]
fields = dict(kv.split("=") for kv in line.split("stats total: ")[1].split())
assert int(fields["accepted"]) == 5 and int(fields["active"]) == 1, line
assert int(fields["bytes_in"]) > 0 and int(fields["bytes_out"]) > 0, line
assert "stats worker 1:" in srv.log_text()
ok("SIGUSR2 statistics: " + line.split(": ", 1)[1])

os.rename(srv.log, srv.log + ".1")
srv.signal(signal.SIGUSR1)
wait_for(lambda: os.path.exists(srv.log), 5, "new log file")
srv.wait_log("log files reopened")
ok("SIGUSR1 reopens the error log (logrotate)")
u.close()
assert srv.stop() == 0
srv.cleanup()
