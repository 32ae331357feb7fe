"""SIGHUP: a new listener becomes reachable; a broken file changes nothing
and says file:line; a removed listener stops accepting while its open
sessions go on; a changed worker count applies live."""
import http.client
import os
import socket
import threading
import time

from harness import ChatClient, Server, chat_conf, free_port, wait_for


def two_ports():
    p1, p2 = free_port(), free_port()
    return p1, p2, "127.0.0.1:%d" % p1, "127.0.0.1:%d" % p2


def two_users(a1, a2, p1, p2):
    """A server on both addresses, alice on the first and bob on the second."""
    srv = Server(chat_conf(listen=[a1, a2]), workers=2)
    alice = ChatClient(("127.0.0.1", p1))
    alice.join("alice")
    bob = ChatClient(("127.0.0.1", p2))
    bob.join("bob")
    assert alice.line() == "[bob joined]"
    return srv, alice, bob


def test_a_listener_added_by_reload_is_reachable():
    p1, p2, a1, a2 = two_ports()
    srv = Server(chat_conf(listen=[a1]), workers=2)
    alice = ChatClient(("127.0.0.1", p1))
    alice.join("alice")
    out = srv.reload(chat_conf(listen=[a1, a2]))
    assert "configuration reloaded" in out, out
    bob = ChatClient(("127.0.0.1", p2))
    bob.join("bob")
    assert alice.line() == "[bob joined]"
    for c in (alice, bob):
        c.close()
    assert srv.stop() == 0


def test_a_broken_configuration_changes_nothing_and_says_file_and_line():
    p1, p2, a1, a2 = two_ports()
    srv, alice, bob = two_users(a1, a2, p1, p2)
    out = srv.reload(chat_conf(listen=[a1, a2]) + "workers = ;\n")
    assert "reload failed: %s:" % srv.conf in out and "syntax error" in out, out
    assert "old configuration is still active" in out, out
    out = srv.reload(chat_conf(listen=[a1, a2, "127.0.0.1:99999"]))
    assert "reload failed" in out and "bad port" in out, out
    # A listener that cannot be bound also fails the reload as a whole.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    busy = "127.0.0.1:%d" % blocker.getsockname()[1]
    out = srv.reload(chat_conf(listen=[a1, a2, busy]))
    assert "reload failed" in out and "Address already in use" in out, out
    blocker.close()
    # A Unix path another server is using: refused, and left alone.
    other_path = os.path.join(srv.dir, "other.sock")
    other = socket.socket(socket.AF_UNIX)
    other.bind(other_path)
    other.listen(1)
    out = srv.reload(chat_conf(listen=[a1, a2, "unix:other.sock"]))
    assert "reload failed" in out and "in use by another server" in out, out
    assert os.path.exists(other_path), "reload removed another server's socket"
    socket.socket(socket.AF_UNIX).connect(other_path)
    other.close()
    carol = ChatClient(("127.0.0.1", p2))
    carol.join("carol")
    alice.send_line("still here")
    assert bob.line() == "[carol joined]"
    assert bob.line() == "alice: still here"
    for c in (alice, bob, carol):
        c.close()
    assert srv.stop() == 0


def test_a_removed_listener_stops_accepting_while_its_sessions_go_on():
    p1, p2, a1, a2 = two_ports()
    srv, alice, bob = two_users(a1, a2, p1, p2)
    out = srv.reload(chat_conf(listen=[a2]))
    assert "configuration reloaded" in out, out
    # Workers apply the removal asynchronously; a client that gets in before
    # its worker has closed the socket must still be served, never dropped.
    deadline = time.monotonic() + 5
    while True:
        try:
            early = ChatClient(("127.0.0.1", p1))
        except ConnectionRefusedError:
            break
        early.read_until(b"nickname?: ")
        early.close()
        assert time.monotonic() < deadline, "removed listener still accepts after 5 s"
        time.sleep(0.01)
    alice.send_line("after removal")
    assert bob.line() == "alice: after removal"
    for c in (alice, bob):
        c.close()
    assert srv.stop() == 0


def test_workers_in_the_file_apply_live_on_reload():
    """workers = N, then reload: applied like 'workers set', without a lost
    chat session or HTTP request; a runtime 'workers set' stands until the
    file changes 'workers' again; -w overrides the file for good."""
    port, hport = free_port(), free_port()
    base = chat_conf(listen=["127.0.0.1:%d" % port]) + (
        'http = ( { name = "web"; listen = [ "127.0.0.1:%d" ]; vhosts = ( { handlers = ( '
        '{ type = "status"; path = "/status"; } ); } ); } );\n' % hport)
    srv = Server(base + "workers = 1;\n", admin=True)
    alice = ChatClient(("127.0.0.1", port))
    alice.join("alice")
    errors, done = [], [0]
    stop = threading.Event()

    def load():
        while not stop.is_set():
            try:
                c = http.client.HTTPConnection("127.0.0.1", hport, timeout=10)
                for _ in range(5):
                    c.request("GET", "/status.json")
                    r = c.getresponse()
                    r.read()
                    if r.status != 200:
                        errors.append(r.status)
                    done[0] += 1
                c.close()
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
    t = threading.Thread(target=load)
    t.start()
    try:
        out = srv.reload(base + "workers = 3;\n")
        assert "applied live" in out and "configuration reloaded" in out, out
        wait_for(lambda: srv.running_workers() == [1, 2, 3], 10, "3 workers")
        info = srv.ctl_json("info")
        assert info["workers_in_file"] == 3
        srv.ctl("workers", "set", "2")
        srv.wait_workers_settled()
        out = srv.reload(base + "workers = 3;\n" + "grace_period = 9;\n")  # 'workers' unchanged
        assert "applied live" not in out
        assert len(srv.running_workers()) == 2  # the runtime 'workers set' stands
        out = srv.reload(base + "workers = 1;\n")
        assert "applied live" in out
        srv.wait_workers_settled()
        assert srv.running_workers() == [1]
        n = done[0]
        wait_for(lambda: done[0] > n + 20, 10, "requests after scaling")
        bob = ChatClient(("127.0.0.1", port))  # alice's session moved and lives
        bob.join("bob")
        assert alice.line() == "[bob joined]"
        bob.close()
    finally:
        stop.set()
        t.join()
    assert not errors, errors[:5]
    alice.close()
    assert srv.stop() == 0
    # under -w the file's count does not apply
    srv = Server(base + "workers = 1;\n", workers=2, admin=True)
    out = srv.reload(base + "workers = 3;\n")
    assert "applied live" not in out and len(srv.running_workers()) == 2
    assert srv.stop() == 0
