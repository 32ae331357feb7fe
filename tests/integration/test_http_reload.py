"""HTTP across reload and stop: a reload changes what new connections get
while a keep-alive connection finishes on the configuration it started
with; a broken file changes nothing; a graceful stop lets a download in
flight finish and closes idle keep-alive connections at once."""
import os
import signal
import socket
import time

from harness import RawHTTP, Server, curl, free_port, http_conf, temp_dir, wait_for

def site(root):
    return '{ names = [ "*" ]; handlers = ( { type = "static"; path = "/"; root = "%s"; } ); }' % root


def start(big=False):
    port = free_port()
    tmp = temp_dir()
    for name in ("one", "two"):
        os.makedirs(os.path.join(tmp, name))
        with open(os.path.join(tmp, name, "index.html"), "w") as f:
            f.write(name + "\n")
    if big:
        with open(os.path.join(tmp, "one", "big.bin"), "wb") as f:
            f.write(os.urandom(16 << 20))
    srv = Server("grace_period = 20;\n" + http_conf(port, site("one")), workers=2, dir=tmp)
    base = "http://127.0.0.1:%d" % port
    assert curl(base + "/")[2] == b"one\n"
    return srv, port, base


def test_reload_serves_new_connections_while_a_kept_alive_one_finishes_on_the_old():
    srv, port, base = start()
    kept = RawHTTP(port)
    kept.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert kept.response().body == b"one\n"
    out = srv.reload("grace_period = 20;\n" + http_conf(port, site("two")))
    assert "configuration reloaded" in out, out
    wait_for(lambda: curl(base + "/")[2] == b"two\n", 5, "new site on new connections")
    kept.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert kept.response().body == b"one\n"  # the old snapshot, until it closes
    kept.close()
    assert srv.stop() == 0


def test_reload_refuses_a_broken_http_block_with_file_and_line():
    srv, port, base = start()
    bad = ("grace_period = 20;\n" + http_conf(port, site("two")).replace(
        'type = "static"', 'type = "static"; colour = "red"'))
    out = srv.reload(bad)
    assert "reload failed" in out and "medusa.conf:5: unknown key 'colour' in a handler" in out, out
    assert "old configuration is still active" in out
    assert curl(base + "/")[2] == b"one\n"
    assert srv.stop() == 0


def test_stop_closes_idle_keepalive_at_once_and_lets_a_download_finish():
    srv, port, base = start(big=True)
    # A slow download in flight, and an idle keep-alive connection, then SIGTERM.
    dl = socket.socket()
    dl.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    dl.connect(("127.0.0.1", port))
    dl.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
    first = dl.recv(65536)
    idle = RawHTTP(port)
    idle.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.response().status == 200
    srv.signal(signal.SIGTERM)
    assert idle.closed(5), "idle keep-alive connection not closed at stop"
    got = first
    while True:
        chunk = dl.recv(1 << 20)
        if not chunk:
            break
        got += chunk
        time.sleep(0.002)
    body = got[got.index(b"\r\n\r\n") + 4:]
    assert body == open(os.path.join(srv.dir, "one", "big.bin"), "rb").read(), len(body)
    assert srv.proc.wait(20) == 0
