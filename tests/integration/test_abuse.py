"""Abuse and limits: per-address connection caps at accept for every
protocol, failed-login throttling shared by every worker (HTTP Basic, FTP,
the console), what reaches the logs and the replies (control characters,
secrets, CR and LF), bare CRs in every line protocol, and running as root."""
import ftplib
import os
import socket
import subprocess
import time

from harness import (MEDUSAD, Admin, ChatClient, Server, chat_conf, free_port, free_ports, site,
                     temp_dir, wait_for, write_secret)


def connect_from(src, port, timeout=10.0):
    """A TCP connection to 127.0.0.1:port from the loopback address src
    (127.0.0.2 is another client as far as the server can tell)."""
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def read_all(s, timeout=5.0):
    s.settimeout(timeout)
    out = b""
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return out
            out += d
    except (socket.timeout, ConnectionResetError):
        return out


def http_get_from(src, port, path="/"):
    s = connect_from(src, port)
    s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
    out = read_all(s)
    s.close()
    return out


def refused_total(srv):
    return srv.ctl_json("info")["refused"]


# ---- per-address caps ----

def test_http_cap_per_address_503_others_served_and_slots_come_back():
    tmp = temp_dir()
    port = free_port()
    srv = Server('http = ( { name = "web"; listen = [ "127.0.0.1:%d" ]; max_conns_per_ip = 3;\n'
                 ' vhosts = ( %s ); } );\n' % (port, site(tmp)), dir=tmp, workers=2, admin=True)
    # Half a request head each, so the kernel hands them over (TCP_DEFER_ACCEPT)
    held = []
    for _ in range(3):
        s = connect_from("127.0.0.1", port)
        s.sendall(b"GET / HTTP/1.1\r\n")
        held.append(s)
    wait_for(lambda: srv.ctl_json("info")["connections_active"] == 3,
             what="three connections held")
    out = http_get_from("127.0.0.1", port)
    assert out.startswith(b"HTTP/1.1 503 "), out
    assert b"Retry-After: 10" in out and out.endswith(b"Too many connections from your address.\n")
    # another address is not counted with the first
    out = http_get_from("127.0.0.2", port)
    assert out.startswith(b"HTTP/1.1 200 ") and out.endswith(b"hello\n"), out
    srv.wait_log("max_conns_per_ip")
    assert refused_total(srv) == 1
    # a held connection completes its request: still served (it was counted, not refused)
    held[0].sendall(b"Host: x\r\nConnection: close\r\n\r\n")
    assert read_all(held[0]).startswith(b"HTTP/1.1 200 ")
    held[0].close()
    wait_for(lambda: http_get_from("127.0.0.1", port).startswith(b"HTTP/1.1 200 "),
             what="a slot back after a close")
    for s in held[1:]:
        s.close()
    # every slot comes back: three at once again
    time.sleep(0.3)
    again = [connect_from("127.0.0.1", port) for _ in range(3)]
    for s in again:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    for s in again:
        assert read_all(s).startswith(b"HTTP/1.1 200 ")
        s.close()
    assert srv.stop() == 0


def test_chat_echo_ftp_and_console_caps():
    tmp = temp_dir()
    cport, eport, fport, aport = free_ports(4)
    os.makedirs(os.path.join(tmp, "ftp"))
    write_secret(os.path.join(tmp, "admin.secret"), "abuse-admin-secret")
    conf = (chat_conf(listen=["127.0.0.1:%d" % cport], extra="max_conns_per_ip = 2;")
            + 'echo = ( { name = "echo"; listen = [ "127.0.0.1:%d" ]; max_conns_per_ip = 2; } );\n'
            % eport
            + 'ftp = ( { name = "files"; listen = [ "127.0.0.1:%d" ]; root = "ftp";'
            ' anonymous = true; max_conns_per_ip = 2; } );\n' % fport)
    conf += ('admin = { listen = [ "127.0.0.1:%d" ]; secret = "admin.secret";'
             ' max_conns_per_ip = 2; };\n' % aport)
    srv = Server(conf, dir=tmp, workers=2)
    # chat: the third from one address is told and closed; another address joins
    a = [ChatClient(("127.0.0.1", cport)) for _ in range(2)]
    for c in a:
        c.read_until(b"nickname?: ")
    third = connect_from("127.0.0.1", cport)
    assert read_all(third) == b"* Too many connections from your address; try again later.\r\n"
    other = connect_from("127.0.0.2", cport)
    assert b"nickname?: " in other.recv(1000)
    # echo: closed without a word
    e = [connect_from("127.0.0.1", eport) for _ in range(2)]
    for s in e:
        s.sendall(b"ping\n")
        assert s.recv(10) == b"ping\n"
    third = connect_from("127.0.0.1", eport)
    assert read_all(third) == b""
    # ftp: 421 before the banner
    f = [ftplib.FTP() for _ in range(2)]
    for x in f:
        x.connect("127.0.0.1", fport, timeout=10)
    third = connect_from("127.0.0.1", fport)
    assert read_all(third) == b"421 Too many connections from your address.\r\n"
    g = ftplib.FTP()
    g.connect("127.0.0.1", fport, timeout=10, source_address=("127.0.0.2", 0))
    g.login()
    g.quit()
    f[0].quit()
    wait_for(lambda: read_all(connect_from("127.0.0.1", fport), 1.0).startswith(b"220"),
             what="an FTP slot back")
    # console: the third TCP session from one address gets 500
    s1, s2 = Admin(("127.0.0.1", aport)), Admin(("127.0.0.1", aport))
    assert s1.frame()[0] == 401 and s2.frame()[0] == 401
    s3 = Admin(("127.0.0.1", aport))
    st, body = s3.frame()
    assert st == 500 and "from your address" in body, (st, body)
    srv.wait_log("max_conns_per_ip", count=1)
    srv.wait_log("admin session refused: 2 sessions from this address already")
    for c in a + [s1, s2, s3]:
        c.close()
    for s in e + [other]:
        s.close()
    f[1].close()
    assert srv.stop() == 0


def test_cap_config_errors():
    tmp = temp_dir()
    conf = os.path.join(tmp, "m.conf")
    with open(conf, "w") as f:
        f.write('echo = ( { name = "e"; listen = [ "127.0.0.1:%d" ];\n'
                '  max_conns_per_ip = -1; } );\n' % free_port())
    p = subprocess.run([MEDUSAD, "-t", "-c", conf], capture_output=True, text=True)
    assert p.returncode == 1 and "m.conf:2:" in p.stderr and "max_conns_per_ip" in p.stderr, p.stderr


# ---- failed-login throttling, shared by every worker ----

def sha512(password):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))


def throttled_server(workers=2, slow_after=2, max_failures=4, block=3):
    """HTTP Basic on /p/, FTP with a user, the console on TCP; one users file."""
    tmp = temp_dir()
    hport, fport, aport = free_ports(3)
    os.makedirs(os.path.join(tmp, "ftp"))
    os.makedirs(os.path.join(tmp, "www", "p"))
    with open(os.path.join(tmp, "www", "p", "s.txt"), "w") as f:
        f.write("secret page\n")
    with open(os.path.join(tmp, "users"), "w") as f:
        f.write("alice:%s:ftp:read\n" % sha512("Wonderland-7"))
    write_secret(os.path.join(tmp, "admin.secret"), "abuse-admin-secret")
    conf = ('login_throttle = { slow_after = %d; max_failures = %d; window = 60; block = %d; };\n'
            % (slow_after, max_failures, block)
            + 'http = ( { name = "web"; listen = [ "127.0.0.1:%d" ]; vhosts = ( { names = [ "*" ];'
            ' handlers = ( { type = "auth"; path = "/p/"; users = "users"; },'
            ' { type = "static"; path = "/"; root = "www"; } ); } ); } );\n' % hport
            + 'ftp = ( { name = "files"; listen = [ "127.0.0.1:%d" ]; root = "ftp"; users = "users";'
            ' login_failure_delay = 0.05; } );\n' % fport
            + 'admin = { listen = [ "unix:run/admin.sock", "127.0.0.1:%d" ];'
            ' secret = "admin.secret"; };\n' % aport)
    srv = Server(conf, dir=tmp, workers=workers)
    srv.sock = os.path.join(tmp, "run", "admin.sock")
    return srv, hport, fport, aport


def basic(port, user, password, src="127.0.0.1"):
    import base64
    s = connect_from(src, port)
    token = base64.b64encode(("%s:%s" % (user, password)).encode()).decode()
    s.sendall(("GET /p/s.txt HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\n"
               "Connection: close\r\n\r\n" % token).encode())
    out = read_all(s)
    s.close()
    return out


def status_of(out):
    return int(out.split(b" ", 2)[1]) if out.startswith(b"HTTP/1.1 ") else 0


def test_http_basic_failures_slow_down_then_refuse_across_workers_and_recover():
    srv, hport, _, _ = throttled_server(workers=2)
    assert status_of(basic(hport, "alice", "Wonderland-7")) == 200
    # each try on a connection of its own: the kernel spreads them over both workers
    assert status_of(basic(hport, "alice", "guess-1")) == 401
    out = basic(hport, "alice", "guess-2")
    assert status_of(out) == 401  # the 2nd failure: from now on, waits
    # the right password inside the wait is not even checked
    wait_for(lambda: status_of(basic(hport, "alice", "Wonderland-7")) == 429, 5,
             "the wait to reach every worker")
    out = basic(hport, "alice", "Wonderland-7")
    assert status_of(out) == 429 and b"Retry-After: 1\r\n" in out, out
    # another address is not affected
    assert status_of(basic(hport, "alice", "Wonderland-7", src="127.0.0.2")) == 200
    # one guess per connection: what is pipelined behind a failure is not checked
    import base64
    s = connect_from("127.0.0.3", hport)
    s.sendall(b"".join(b"GET /p/s.txt HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\n\r\n"
                       % base64.b64encode(b"alice:guess-%d" % i) for i in range(5)))
    out = read_all(s)
    s.close()
    assert out.count(b"HTTP/1.1 401") == 1 and b"Connection: close" in out, out
    # after the 1 s wait a try is checked again; failures 3 and 4 reach the block
    time.sleep(1.1)
    assert status_of(basic(hport, "alice", "guess-3")) == 401
    time.sleep(2.1)
    assert status_of(basic(hport, "alice", "guess-4")) == 401
    srv.wait_log("4 failed logins in")
    # the block is on its way to every worker through its queue (the log line comes first)
    refused = wait_for(lambda: (lambda outs: all(status_of(o) == 429 for o in outs) and outs)(
        [basic(hport, "alice", "Wonderland-7") for _ in range(6)]), 5, "every worker to refuse")
    assert b"Retry-After: 3\r\n" in refused[0] or b"Retry-After: 2\r\n" in refused[0]
    # logged once per wait and worker, not once per refusal
    assert srv.log_text().count("login refused without a check: too many") <= 2
    # the console lists the address; the block ends by itself
    listed = srv.ctl_json("throttle")
    assert sorted((e["address"], e["failures"], e["blocked"]) for e in listed) == [
        ("127.0.0.1", 4, True), ("127.0.0.3", 1, False)]
    wait_for(lambda: status_of(basic(hport, "alice", "Wonderland-7")) == 200, 6, "the block to end")
    assert srv.stop() == 0


def test_ftp_and_console_failures_share_one_count():
    srv, _, fport, aport = throttled_server(workers=3, slow_after=3, max_failures=3, block=30)

    def ftp_login(password, src="127.0.0.1"):
        f = ftplib.FTP()
        f.connect("127.0.0.1", fport, timeout=10, source_address=(src, 0))
        try:
            return f.login("alice", password)
        except ftplib.error_perm as e:
            return str(e)
        except ftplib.error_temp as e:
            return str(e)
        finally:
            f.close()

    assert ftp_login("Wonderland-7").startswith("230")
    assert ftp_login("nope-1").startswith("530 Login incorrect")
    # the console's TCP auth counts with FTP's
    a = Admin(("127.0.0.1", aport))
    a.frame()
    st, body = a.cmd("auth " + "0" * 64)
    assert st == 401 and "authentication failed" in body
    a.close()
    assert ftp_login("nope-2").startswith("530 Login incorrect")
    srv.wait_log("3 failed logins in")
    time.sleep(0.3)
    # blocked: FTP says 421 and closes; the console refuses before checking
    wait_for(lambda: ftp_login("Wonderland-7").startswith("421 Too many failed logins"), 5,
             "every worker to know")
    a = Admin(("127.0.0.1", aport))
    (st, body), _, _ = a.auth("abuse-admin-secret")
    assert st == 401 and "too many failed logins from your address" in body, body
    assert a.closed()
    # another address logs in to both
    assert ftp_login("Wonderland-7", src="127.0.0.2").startswith("230")
    s = socket.socket()
    s.bind(("127.0.0.2", 0))
    s.connect(("127.0.0.1", aport))
    b = Admin.__new__(Admin)
    b.sock, b.buf = s, b""
    s.settimeout(10)
    (st, body), _, _ = b.auth("abuse-admin-secret")
    assert st == 200, body
    # an admin forgives the address at once
    assert b.cmd("throttle clear 127.0.0.1") == (200, "1 address cleared\n")
    b.close()
    wait_for(lambda: ftp_login("Wonderland-7").startswith("230"), 5, "the clear to reach workers")
    # a worker started later learns of current waits: block again, then scale up
    for i in range(3):
        ftp_login("again-%d" % i)
    wait_for(lambda: ftp_login("Wonderland-7").startswith("421"), 5, "the new block")
    srv.ctl("workers", "set", "5")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # every try, whichever worker takes it
        assert ftp_login("Wonderland-7").startswith("421")
    assert srv.stop() == 0


# ---- running as root ----

def proc_ids(pid):
    """Uid, Gid, Groups and CapEff of every thread of pid, from /proc."""
    out = []
    for tid in os.listdir("/proc/%d/task" % pid):
        fields = {}
        with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Uid", "Gid", "Groups", "CapEff", "CapPrm"):
                    fields[k] = v.split()
        out.append(fields)
    return out


def root_only():
    if os.geteuid() != 0:
        import pytest
        pytest.skip("needs root (CI runs as root)")


def test_root_binds_then_serves_as_the_user_with_nothing_of_roots_left():
    root_only()
    import pwd
    import grp
    nobody, nogroup = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    tmp = temp_dir()
    os.chmod(tmp, 0o755)
    site(tmp)
    for d, _, files in os.walk(os.path.join(tmp, "www")):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    port = free_port()
    conf = os.path.join(tmp, "m.conf")
    with open(conf, "w") as f:
        f.write('user = "nobody"; group = "nogroup"; workers = 2;\n'
                'log = { level = "info"; error_log = "error.log"; };\n'
                'http = ( { name = "web"; listen = [ "127.0.0.1:%d" ]; vhosts = ( %s ); } );\n'
                % (port, site(tmp)))
    p = subprocess.Popen([MEDUSAD, "-c", conf], stdin=subprocess.DEVNULL)
    try:
        log = os.path.join(tmp, "error.log")
        wait_for(lambda: os.path.exists(log) and "medusad started" in open(log).read(), 10,
                 "the start")
        text = open(log).read()
        assert text.index("running as user nobody") < text.index("medusad started"), text
        for t in proc_ids(p.pid):
            assert t["Uid"] == [str(nobody)] * 4, t
            assert t["Gid"] == [str(nogroup)] * 4, t
            assert t["Groups"] == [str(nogroup)], t  # root's groups went (setgroups)
            assert int(t["CapEff"][0], 16) == 0 and int(t["CapPrm"][0], 16) == 0, t
        assert len(proc_ids(p.pid)) >= 3  # the supervisor and both workers
        assert http_get_from("127.0.0.1", port).endswith(b"hello\n")
    finally:
        p.terminate()
        assert p.wait(20) == 0


def test_root_without_user_stops_unless_allow_root():
    root_only()
    tmp = temp_dir()
    port = free_port()
    conf = os.path.join(tmp, "m.conf")
    with open(conf, "w") as f:
        f.write('echo = ( { name = "e"; listen = [ "127.0.0.1:%d" ]; } );\n' % port)
    p = subprocess.run([MEDUSAD, "-c", conf], capture_output=True, text=True, timeout=20)
    assert p.returncode == 1, p
    assert "runs as root and the configuration sets no 'user'" in p.stderr, p.stderr
    assert "allow_root = true" in p.stderr
    # nothing was served meanwhile
    s = socket.socket()
    assert s.connect_ex(("127.0.0.1", port)) != 0
    s.close()
    with open(conf, "a") as f:
        f.write("allow_root = true;\n")
    q = subprocess.Popen([MEDUSAD, "-c", conf], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True)
    try:
        wait_for(lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0, 10, "the start")
    finally:
        q.terminate()
        assert q.wait(20) == 0
    assert "serving as root: no 'user' is set, and 'allow_root = true'" in q.stderr.read()


# ---- what reaches logs and replies ----

def test_bare_cr_and_control_characters_in_every_line_protocol():
    tmp = temp_dir()
    hport, fport, cport, aport = free_ports(4)
    os.makedirs(os.path.join(tmp, "ftp"))
    write_secret(os.path.join(tmp, "admin.secret"), "abuse-admin-secret")
    conf = ('http = ( { name = "web"; listen = [ "127.0.0.1:%d" ]; vhosts = ( %s ); } );\n'
            % (hport, site(tmp))
            + 'ftp = ( { name = "files"; listen = [ "127.0.0.1:%d" ]; root = "ftp";'
            ' anonymous = true; } );\n' % fport
            + chat_conf(listen=["127.0.0.1:%d" % cport])
            + 'admin = { listen = [ "unix:run/admin.sock", "127.0.0.1:%d" ];'
            ' secret = "admin.secret"; };\n' % aport)
    srv = Server(conf, dir=tmp, workers=2)
    srv.sock = os.path.join(tmp, "run", "admin.sock")
    # HTTP: 400 for a CR without its LF anywhere in the head
    s = connect_from("127.0.0.1", hport)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\rX-B: 2\r\n\r\n")
    assert read_all(s).startswith(b"HTTP/1.1 400 ")
    # FTP: 500 for the line, and the session goes on
    s = connect_from("127.0.0.1", fport)
    f = s.makefile("rb")
    assert f.readline().startswith(b"220")
    s.sendall(b"USER anonymous\rPASS x\r\n")
    assert f.readline().startswith(b"500 Syntax error: a CR without its LF")
    s.sendall(b"NOOP\x00\r\n")
    assert f.readline().startswith(b"500 ")
    s.sendall(b"USER anonymous\r\n")
    assert f.readline().startswith(b"331")
    s.close()
    # chat: the line is refused and not said to anyone
    c = ChatClient(("127.0.0.1", cport))
    c.join("ann")
    listener = ChatClient(("127.0.0.1", cport))
    listener.join("bob")
    c.send_line("hello\rworld")
    assert b"line refused: control characters" in c.read_until(b"control characters\r\n")
    c.send_line("plain")
    got = listener.read_until(b"plain")
    assert b"hello" not in got and b"world" not in got, got
    # the console (after authentication too): 400
    a = Admin(("127.0.0.1", aport))
    (st, _), _, _ = a.auth("abuse-admin-secret")
    assert st == 200
    assert a.cmd("info\rx")[0] == 400
    assert a.cmd("info")[0] == 200
    a.close()
    assert srv.stop() == 0


def test_control_characters_never_reach_log_lines_or_response_headers():
    import base64
    tmp = temp_dir()
    hport, fport = free_ports(2)
    os.makedirs(os.path.join(tmp, "ftp"))
    os.makedirs(os.path.join(tmp, "up"))
    with open(os.path.join(tmp, "users"), "w") as f:
        f.write("alice:%s\n" % sha512("Wonderland-7"))
    conf = ('http = ( { name = "web"; listen = [ "127.0.0.1:%d" ]; vhosts = ( { names = [ "*" ];'
            ' handlers = ( { type = "redirect"; path = "/r/"; pattern = "^/r/(.*)$";'
            ' to = "/new/$1"; },'
            ' { type = "put"; path = "/up/"; root = "up"; },'
            ' { type = "auth"; path = "/p/"; users = "users"; },'
            ' { type = "static"; path = "/"; root = "www"; } ); } ); } );\n' % hport
            + 'ftp = ( { name = "files"; listen = [ "127.0.0.1:%d" ]; root = "ftp";'
            ' users = "users"; login_failure_delay = 0.05; } );\n' % fport)
    site(tmp)
    srv = Server(conf, dir=tmp, workers=2)

    def raw(req):
        s = connect_from("127.0.0.1", hport)
        s.sendall(req)
        out = read_all(s)
        s.close()
        return out

    # a decoded path (%0D%0A) in a Location: encoded again, never a header of its own
    out = raw(b"GET /r/a%0d%0aSet-Cookie:%20evil=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = out.split(b"\r\n\r\n")[0]
    assert b"\r\nLocation: /new/a%0D%0ASet-Cookie: evil=1\r\n" in head, head
    assert b"\r\nSet-Cookie" not in head
    out = raw(b"PUT /up/b%0d%0aX-Evil:%201 HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
              b"Connection: close\r\n\r\nz")
    head = out.split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 201") and b"\r\nX-Evil" not in head, head
    assert b"Location: /up/b%0D%0AX-Evil: 1" in head
    # a user name with a newline and an escape sequence: one log line, escaped
    token = base64.b64encode(b"eve\nZ error sup FORGED\x1b[2J:x").decode()
    out = raw(("GET /p/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\nConnection: close"
               "\r\n\r\n" % token).encode())
    assert out.startswith(b"HTTP/1.1 401")
    s = connect_from("127.0.0.1", fport)
    fr = s.makefile("rb")
    fr.readline()
    s.sendall(b"USER mallory\x1b]0;owned\x07\r\nPASS x\r\n")
    fr.readline()
    assert fr.readline().startswith(b"530")
    s.close()
    srv.wait_log("login failed for user")
    text = open(srv.log, "rb").read()
    for line in text.split(b"\n"):
        assert not any(ch < 0x20 and ch != 0x09 for ch in line), line
        assert b"FORGED" not in line or b"authentication failed for user 'eve\\x0a" in line, line
    assert b"user 'eve\\x0aZ error sup FORGED\\x1b[2J'" in text
    assert b"mallory\\x1b]0;owned\\x07" in text
    assert b"/up/b\\x0d\\x0aX-Evil: 1" in text
    assert srv.stop() == 0


def test_an_include_of_a_folder_is_an_error_not_an_exit_on_reload():
    """libconfig's scanner exit()s when it cannot read what @include opened
    (a folder, or a name a NUL cuts short): found by fuzz_config."""
    tmp = temp_dir()
    port = free_port()
    os.makedirs(os.path.join(tmp, "conf.d"))
    conf = 'echo = ( { name = "e"; listen = [ "127.0.0.1:%d" ]; } );\n' % port
    srv = Server(conf, dir=tmp)
    for bad, why in (('@include "conf.d"\n', 'is not a regular file (a folder'),
                     ('@include "conf.d\x00x"\n', "a NUL"), ('@include ""\n', "not a regular file"),
                     ('@include "conf.d\n\x00"\n', "a NUL")):  # a name may span lines
        out = srv.reload(bad + conf)
        assert "reload failed" in out and why in out, out
        assert srv.proc.poll() is None
    p = subprocess.run([MEDUSAD, "-t", "-c", srv.conf], capture_output=True, text=True)
    assert p.returncode == 1 and "medusa.conf:3: @include" in p.stderr, p.stderr
    s = connect_from("127.0.0.1", port)
    s.sendall(b"still here\n")
    assert s.recv(100) == b"still here\n"
    s.close()
    assert srv.stop() == 0
