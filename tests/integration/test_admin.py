"""The admin console and medusactl, against a real server: framing, every
command in table and JSON form, the two levels, HMAC challenge auth (right,
wrong, replayed, missing, world-readable secret), reload, kill, listener
disable/enable, chat who/say, log commands, hostile input and 50
concurrent sessions, and medusactl's one-shot, interactive and error
paths."""
import json
import os
import socket
import subprocess
import threading
import time
import types

import pytest

from harness import (MEDUSAD, MEDUSACTL, Admin, ChatClient, RawHTTP, Server, ctl, free_port,
                     http_conf, temp_dir, write_secret)

http_port, chat_port, admin_port = free_port(), free_port(), free_port()


def test_a_world_readable_secret_is_refused_with_file_and_line():
    tmp = temp_dir()
    admin_secret = "admin-secret-0123456789abcdef"
    # A world-readable secret is refused at start-up, with file:line.
    write_secret(os.path.join(tmp, "loose.secret"), admin_secret, 0o644)
    bad = os.path.join(tmp, "bad.conf")
    with open(bad, "w") as f:
        f.write('admin = { listen = [ "127.0.0.1:%d" ];\n  secret = "loose.secret"; };\n' % admin_port)
    p = subprocess.run([MEDUSAD, "-t", "-c", bad], capture_output=True, text=True)
    assert p.returncode == 1 and "bad.conf:2:" in p.stderr and "readable by group or others" in p.stderr, p.stderr


@pytest.fixture(scope="module")
def env():
    tmp = temp_dir()
    os.makedirs(os.path.join(tmp, "www"))
    os.makedirs(os.path.join(tmp, "run"))
    with open(os.path.join(tmp, "www", "index.html"), "w") as f:
        f.write("hello\n")
    admin_secret, op_secret = "admin-secret-0123456789abcdef", "operator-secret-0123456789"
    write_secret(os.path.join(tmp, "admin.secret"), admin_secret)
    write_secret(os.path.join(tmp, "operator.secret"), op_secret)
    sock = os.path.join(tmp, "run", "admin.sock")
    site = '{ names = [ "*" ]; handlers = ( { type = "static"; path = "/"; root = "www"; } ); }'
    conf = ('admin = { listen = [ "unix:run/admin.sock", "127.0.0.1:%d" ]; secret = "admin.secret";'
            ' operator_secret = "operator.secret"; max_sessions = 60; };\n' % admin_port +
            http_conf(http_port, site) +
            'chat = ( { name = "chat"; listen = [ "127.0.0.1:%d" ]; } );\n' % chat_port)

    srv = Server(conf, workers=2, dir=tmp)
    assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
    env = types.SimpleNamespace(tmp=tmp, sock=sock, conf=conf, srv=srv, admin_secret=admin_secret, op_secret=op_secret)
    yield env
    if env.srv.proc.poll() is None:
        env.srv.stop()


def test_framing_and_every_read_only_command(env):
    sock = env.sock
    srv = env.srv
    admin_secret = env.admin_secret
    # ---- framing and every read-only command, table and JSON ----
    a = Admin(sock)
    st, body = a.cmd("help")
    assert st == 200
    for c in ["info", "workers", "listeners", "conns", "kill", "stats", "reload", "config", "log",
              "http servers", "chat who",
              "chat", "shutdown", "quit"]:
        assert c in body, c
    # the table's columns line up: every level word starts at the same column
    levels = (" operator ", " admin ", " any ")
    cols = {min(line.find(lvl) for lvl in levels if lvl in line)
            for line in body.splitlines()[1:] if any(lvl in line for lvl in levels)}
    assert len(cols) == 1, body
    st, body = a.cmd("info")
    assert st == 200 and "pid" in body and "uptime" in body
    st, body = a.cmd("info json")
    info = json.loads(body)
    assert info["workers"] == 2 and info["pid"] == srv.proc.pid
    st, body = a.cmd("workers")
    lines = body.strip().splitlines()
    assert lines[0].split()[:2] == ["id", "state"] and len(lines) == 3, body
    st, body = a.cmd("workers json")
    ws = json.loads(body)
    assert [w["id"] for w in ws] == [1, 2] and all(w["state"] == "running" for w in ws)
    assert all(k in ws[0] for k in ["active", "accepted", "requests", "bytes_in", "bytes_out",
                                     "inbox", "lag_ms"])
    st, body = a.cmd("listeners json")
    ls = json.loads(body)
    assert {l["service"] for l in ls} == {"web", "chat"} and all(l["state"] == "enabled" for l in ls)
    st, body = a.cmd("stats")
    assert st == 200 and "worker 1:" in body and "http web:" in body and "chat:" in body, body
    st, body = a.cmd("http servers")
    assert st == 200 and "server web: 127.0.0.1:%d" % http_port in body and "static" in body, body
    servers = json.loads(a.cmd("http servers json")[1])
    assert servers[0]["name"] == "web" and servers[0]["vhosts"][0]["handlers"][0]["type"] == "static"
    st, body = a.cmd("chat")
    assert st == 400 and "chat who" in body and "chat say MESSAGE" in body, body
    st, body = a.cmd("stats json")
    stats = json.loads(body)
    assert stats["http"]["servers"][0]["name"] == "web" and "chat" in stats
    st, body = a.cmd("config")
    assert st == 200 and "admin.secret" in body and admin_secret not in body
    st, body = a.cmd("log tail 5 all")
    assert st == 200 and len(body.strip().splitlines()) == 5
    assert "admin command: log tail" in body  # all: the console's own lines too
    st, body = a.cmd("log tail 256")
    assert st == 200 and "listening" in body  # the server's own log, not the console's
    assert "admin command:" not in body and "admin session" not in body, body


def test_a_reply_that_cannot_be_written_fails(env):
    # A full disk behind stdout is exit status 1 and a message, not 0.
    with open("/dev/full", "w") as full:
        p = subprocess.run([MEDUSACTL, "-s", env.sock, "info"], stdout=full,
                           stderr=subprocess.PIPE, text=True, timeout=30)
    assert p.returncode == 1 and "cannot write the reply" in p.stderr, p


def test_conns_kill_and_chat_commands(env):
    sock = env.sock
    a = Admin(sock)
    # 'workers' reflects reality: requests and connections counted per worker
    for _ in range(20):
        c = RawHTTP(http_port)
        c.send(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert c.response().status == 200
        c.close()
    ws = json.loads(a.cmd("workers json")[1])
    assert sum(w["requests"] for w in ws) >= 20 and sum(w["accepted"] for w in ws) >= 20, ws

    # ---- conns, kill, chat ----
    alice = ChatClient(("127.0.0.1", chat_port))
    alice.join("alice")
    held = RawHTTP(http_port)
    held.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    held.response()
    st, body = a.cmd("conns json")
    conns = json.loads(body)
    chat_conn = [c for c in conns if c["service"] == "chat"]
    web_conn = [c for c in conns if c["service"] == "web"]
    assert len(chat_conn) == 1 and "alice" in chat_conn[0]["state"], conns
    assert len(web_conn) == 1 and "idle" in web_conn[0]["state"], conns
    for k in ["id", "worker", "peer", "age_s", "idle_s", "bytes_in", "bytes_out"]:
        assert k in chat_conn[0]
    st, body = a.cmd("conns chat")
    assert st == 200 and "alice" in body and "web" not in body.split("\n", 1)[1]
    st, body = a.cmd("conns %d" % web_conn[0]["worker"])
    assert st == 200 and str(web_conn[0]["id"]) in body
    st, body = a.cmd("chat who")
    assert st == 200 and body.strip() == "alice"
    st, body = a.cmd("chat say maintenance at noon")
    assert st == 200
    assert alice.line() == "* operator notice: maintenance at noon"
    st, body = a.cmd("kill %d" % web_conn[0]["id"])
    assert st == 200 and "closed" in body
    assert held.closed()
    st, body = a.cmd("kill %d" % web_conn[0]["id"])
    assert st == 400 and "no connection" in body


def test_listener_disable_keeps_clients_waiting_and_enable_serves_them(env):
    sock = env.sock
    a = Admin(sock)
    # ---- listener disable / enable ----
    st, body = a.cmd("listener disable web")
    assert st == 200 and "disabled" in body
    keep = RawHTTP(http_port)  # accepted? no: it waits in the kernel queue
    keep.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    keep.sock.settimeout(1.0)
    try:
        keep.sock.recv(1)
        raise AssertionError("a disabled listener answered")
    except socket.timeout:
        pass
    states = {l["service"]: l["state"] for l in json.loads(a.cmd("listeners json")[1])}
    assert states == {"web": "disabled", "chat": "enabled"}, states
    alice = ChatClient(("127.0.0.1", chat_port))
    alice.join("alice2")
    alice.send_line("still here")  # existing sessions keep working
    alice.close()
    st, body = a.cmd("listener enable 127.0.0.1:%d" % http_port)
    assert st == 200
    keep.sock.settimeout(10)
    assert keep.response().status == 200  # the queued client is served, not lost
    keep.close()
    st, body = a.cmd("listener disable nosuch")
    assert st == 400


def test_reload_answers_with_the_outcome(env):
    tmp = env.tmp
    sock = env.sock
    conf = env.conf
    srv = env.srv
    a = Admin(sock)
    # ---- reload ----
    st, body = a.cmd("reload")
    assert st == 200 and "reloaded" in body
    with open(os.path.join(tmp, "medusa.conf"), "a") as f:
        f.write("bogus = 1;\n")
    st, body = a.cmd("reload")
    assert st == 500 and "medusa.conf:" in body and "unknown key 'bogus'" in body, body
    assert "old configuration is still active" in body
    srv.write_conf(conf)
    st, body = a.cmd("reload")
    assert st == 200


def test_log_level_and_reopen(env):
    sock = env.sock
    a = Admin(sock)
    # ---- log commands ----
    st, body = a.cmd("log level debug")
    assert st == 200
    st, body = a.cmd("log level loud")
    assert st == 400
    st, body = a.cmd("log reopen")
    assert st == 200
    st, body = a.cmd("log level info")


def test_tcp_auth_levels_and_refusals(env):
    srv = env.srv
    admin_secret = env.admin_secret
    op_secret = env.op_secret
    # ---- TCP auth and levels ----
    t = Admin(("127.0.0.1", admin_port))
    (st, body), challenge, answer = t.auth(admin_secret)
    assert st == 200 and "admin" in body
    assert t.cmd("workers")[0] == 200
    t.close()
    o = Admin(("127.0.0.1", admin_port))
    (st, body), _, _ = o.auth(op_secret)
    assert st == 200 and "operator" in body
    assert o.cmd("info")[0] == 200
    st, body = o.cmd("reload")
    assert st == 401 and "needs level admin" in body
    st, body = o.cmd("chat say x")
    assert st == 401
    st, body = o.cmd("log level debug")
    assert st == 401
    o.close()
    # replayed answer: a new session has a new challenge
    r = Admin(("127.0.0.1", admin_port))
    st, challenge2 = r.frame()
    assert challenge2 != challenge
    st, body = r.cmd("auth " + answer)
    assert st == 401 and r.closed()
    # wrong answer: delayed, refused, closed
    w = Admin(("127.0.0.1", admin_port))
    t0 = time.monotonic()
    (st, body), _, _ = w.auth("not-the-secret-at-all")
    assert st == 401 and time.monotonic() - t0 >= 0.9 and w.closed()
    # missing auth
    m = Admin(("127.0.0.1", admin_port))
    m.frame()
    st, body = m.cmd("workers")
    assert st == 401 and m.closed()
    srv.wait_log("admin authentication failed")
    # a session that never authenticates is closed after 10 s, freeing its slot
    q = Admin(("127.0.0.1", admin_port), timeout=20)
    q.frame()
    t0 = time.monotonic()
    assert q.closed(15) and 8 <= time.monotonic() - t0 <= 14


def test_hostile_input_and_50_concurrent_sessions(env):
    sock = env.sock
    # ---- hostile input ----
    h = Admin(sock)
    h.sock.sendall(b"x" * (1 << 20) + b"\n")
    st, body = h.frame()
    assert st == 400 and "too long" in body
    assert h.cmd("info")[0] == 200
    h.sock.sendall(b"\x00\x01\x02binary\xff\xfe\n")
    st, body = h.frame()
    assert st == 400
    for bad_cmd, want in [("frobnicate", 400), ("workers please", 400), ("kill", 400),
                          ("kill abc", 400), ("log tail 9999", 400), ("conns 99", 400),
                          ("shutdown later", 400), ("chat", 400)]:
        st, body = h.cmd(bad_cmd)
        assert st == want, (bad_cmd, st, body)
    assert h.cmd("info")[0] == 200

    errors = []

    def session(i):
        try:
            s = Admin(sock)
            for _ in range(5):
                assert s.cmd("workers json")[0] == 200
                assert s.cmd("nonsense %d" % i)[0] == 400
            s.close()
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
    ths = [threading.Thread(target=session, args=(i,)) for i in range(50)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert not errors, errors[:3]
    c = RawHTTP(http_port)
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert c.response().status == 200
    c.close()
    h.close()


def test_medusactl_exit_codes_and_interactive(env):
    tmp = env.tmp
    sock = env.sock
    # ---- medusactl ----
    rc, out, err = ctl("-s", sock, "workers", "json")
    assert rc == 0 and len(json.loads(out)) == 2
    rc, out, err = ctl("-a", "127.0.0.1:%d" % admin_port, "-k", os.path.join(tmp, "admin.secret"),
                       "info", "json")
    assert rc == 0 and json.loads(out)["workers"] == 2
    rc, out, err = ctl("-a", "127.0.0.1:%d" % admin_port, "-k", os.path.join(tmp, "operator.secret"),
                       "reload")
    assert rc == 1 and "needs level admin" in err
    rc, out, err = ctl("-a", "127.0.0.1:%d" % admin_port, "-k", os.path.join(tmp, "medusa.conf"), "info")
    assert rc == 3 and "authentication failed" in err
    rc, out, err = ctl("-s", os.path.join(tmp, "nowhere.sock"), "info")
    assert rc == 3 and "cannot connect" in err
    rc, out, err = ctl("-s", sock, "bogus")
    assert rc == 1 and "unknown command" in err
    rc, out, err = ctl("-a", "127.0.0.1:%d" % admin_port, "info")
    assert rc == 2
    rc, out, err = ctl("-s", sock, stdin="info\nworkers\nquit\n")
    assert rc == 0 and "uptime" in out and "state" in out and "bye" in out, (rc, out, err)


def test_shutdown_now_and_medusactl_sees_the_server_go(env):
    sock = env.sock
    srv = env.srv
    # ---- shutdown from the console; medusactl sees the server go away ----
    # an interactive medusactl whose server dies mid-session says so
    p = subprocess.Popen([MEDUSACTL, "-s", sock], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    p.stdin.write("info\n")
    p.stdin.flush()
    time.sleep(0.5)
    rc, out, err = ctl("-s", sock, "shutdown", "now")
    assert rc == 0 and "shutting down" in out
    assert srv.proc.wait(20) == 0
    p.stdin.write("info\n")
    p.stdin.flush()
    out, err = p.communicate(timeout=10)
    assert p.returncode == 3 and "uptime" in out and "closed the connection" in err, (out, err)
    rc, out, err = ctl("-s", sock, "info")
    assert rc == 3
