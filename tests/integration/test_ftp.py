"""FTP with real clients (ftplib, curl, lftp): the command set, passive and
active, ASCII and binary, resume, permissions and confinement, hostile
input, sessions in the console, and transfers while workers leave."""
import collections
import concurrent.futures
import hashlib
import io
import os
import random
import re
import socket
import subprocess
import threading
import time
import warnings
import ftplib

import pytest

from harness import Server, free_port, temp_dir, wait_for

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

BIG = 24 << 20  # a file big enough to be mid-transfer when we act


def pasv_range():
    base = random.randrange(40000, 48000, 100)
    return base, base + 299


def ftp_conf(port, extra="", name="files", per_ip=300):
    lo, hi = pasv_range()
    return ('ftp = ( { name = "%s"; listen = [ "127.0.0.1:%d" ]; root = "ftp"; anonymous = true;\n'
            ' anonymous_upload = "incoming"; users = "ftpusers"; passive_ports = [ %d, %d ];\n'
            ' login_failure_delay = 0.3; max_sessions_per_ip = %d; data_timeout = 3;\n'
            ' transfer_log = "xferlog"; %s } );\n' % (name, port, lo, hi, per_ip, extra))


def make_tree(tmp):
    root = os.path.join(tmp, "ftp")
    for d in ("pub/sub", "incoming", "home/alice", "home/bob"):
        os.makedirs(os.path.join(root, d))
    with open(os.path.join(root, "pub", "hello.txt"), "wb") as f:
        f.write(b"line one\nline two\n")
    with open(os.path.join(root, "pub", "big.bin"), "wb") as f:
        f.write(os.urandom(1 << 20) * (BIG >> 20))
    with open(os.path.join(tmp, "secret.txt"), "w") as f:
        f.write("outside the root\n")
    os.symlink("../../../secret.txt", os.path.join(root, "home", "alice", "escape"))
    os.symlink(tmp, os.path.join(root, "home", "alice", "escapedir"))
    os.symlink("data.bin", os.path.join(root, "home", "alice", "inside"))
    with open(os.path.join(root, "home", "alice", "data.bin"), "wb") as f:
        f.write(bytes(range(256)) * 64)
    with open(os.path.join(root, "home", "bob", "readme"), "w") as f:
        f.write("bob's\n")
    h = lambda p: crypt.crypt(p, crypt.mksalt(crypt.METHOD_SHA512))
    with open(os.path.join(tmp, "ftpusers"), "w") as f:
        f.write("# test users\n")
        f.write("alice:%s:ftp/home/alice:read,write,delete,mkdir,rename\n" % h("wonderland"))
        f.write("bob:%s:ftp/home/bob\n" % h("builder"))
    return root


@pytest.fixture(scope="module")
def env():
    tmp = temp_dir()
    root = make_tree(tmp)
    port = free_port()
    # its storms fail logins by the hundred from 127.0.0.1, beside good
    # sessions from there: the failed-login throttle (test_abuse.py) is off
    srv = Server("login_throttle = { max_failures = 0; };\n" + ftp_conf(port), workers=2, dir=tmp,
                 admin=True)
    yield srv, port, root, tmp
    assert srv.stop() == 0  # sanitizer builds exit non-zero on a finding


def login(port, user="alice", password="wonderland", timeout=10):
    f = ftplib.FTP()
    f.connect("127.0.0.1", port, timeout=timeout)
    f.login(user, password)
    return f


def retr(f, path, rest=None):
    buf = io.BytesIO()
    f.retrbinary("RETR " + path, buf.write, rest=rest)
    return buf.getvalue()


def code_of(exc):
    return int(str(exc)[:3])


def expect_error(code, fn, *args):
    with pytest.raises(ftplib.Error) as e:
        fn(*args)
    assert code_of(e.value) == code, str(e.value)
    return str(e.value)


def test_before_login_only_user_pass_feat_help_quit(env):
    srv, port, root, tmp = env
    f = ftplib.FTP()
    welcome = f.connect("127.0.0.1", port, timeout=10)
    assert welcome.startswith("220 ")
    assert "UTF8" in f.sendcmd("FEAT")
    assert f.sendcmd("HELP").startswith("214")
    for cmd in ("PWD", "CWD /", "LIST", "PASV", "EPSV", "RETR x", "STAT", "SYST", "NOOP",
                "PORT 127,0,0,1,200,10", "MKD x", "SITE HELP", "TYPE I"):
        expect_error(530, f.sendcmd, cmd)
    expect_error(503, f.sendcmd, "PASS nobody-asked")
    assert f.quit().startswith("221")


def test_failed_logins_are_delayed_then_the_connection_closes(env):
    srv, port, root, tmp = env
    f = ftplib.FTP()
    f.connect("127.0.0.1", port, timeout=10)
    for i in range(2):
        t = time.monotonic()
        expect_error(530, f.login, "alice", "wrong")
        assert time.monotonic() - t >= 0.25  # login_failure_delay
    expect_error(530, f.login, "nosuchuser", "x")  # the third: closed after the reply
    assert f.getline().startswith("421")
    with pytest.raises((EOFError, OSError)):
        f.sendcmd("NOOP")
    assert "3 failed logins; closing" in srv.log_text()
    assert "wrong" not in srv.log_text()  # no password in the log
    # The anonymous user, under both names, and the configured ones.
    for user in ("anonymous", "ftp"):
        g = login(port, user, "guest@example.com")
        assert "hello.txt" in g.nlst("pub")
        g.quit()


def test_the_command_set(env):
    srv, port, root, tmp = env
    home = os.path.join(root, "home", "alice")
    f = login(port)
    assert f.sendcmd("SYST") == "215 UNIX Type: L8"
    assert f.pwd() == "/"
    assert f.sendcmd("NOOP").startswith("200")
    assert f.sendcmd("ALLO 100").startswith("202")
    assert f.sendcmd("ACCT x").startswith("202")
    assert f.sendcmd("STRU F").startswith("200")
    expect_error(504, f.sendcmd, "STRU R")
    assert f.sendcmd("MODE S").startswith("200")
    expect_error(504, f.sendcmd, "MODE B")
    expect_error(504, f.sendcmd, "TYPE E")
    assert f.sendcmd("OPTS UTF8 ON").startswith("200")
    assert f.sendcmd("HELP RETR") == "214 Syntax: RETR <file>"
    assert "CHMOD" in f.sendcmd("SITE HELP")

    # Folders.
    assert f.mkd("work") == "/work"
    assert f.mkd('say "hi"') == '/say "hi"'  # RFC 959: quotes doubled in 257
    f.cwd("work")
    assert f.pwd() == "/work"
    f.cwd("..")
    f.cwd("work")
    f.sendcmd("CDUP")
    assert f.pwd() == "/"
    expect_error(550, f.cwd, "nosuch")
    f.rmd('say "hi"')

    # Binary up and down, every byte value.
    data = bytes(range(256)) * 4000 + b"\r\n\n\r"
    f.storbinary("STOR work/b.bin", io.BytesIO(data))
    assert retr(f, "work/b.bin") == data
    assert f.size("work/b.bin") == len(data)
    assert re.match(r"213 \d{14}$", f.sendcmd("MDTM work/b.bin"))

    # ASCII: CRLF on the wire, LF on disk.
    f.storlines("STOR work/a.txt", io.BytesIO(b"one\r\ntwo\r\nthree\r\n"))
    with open(os.path.join(home, "work", "a.txt"), "rb") as fh:
        assert fh.read() == b"one\ntwo\nthree\n"
    lines = []
    f.retrlines("RETR work/a.txt", lines.append)
    assert lines == ["one", "two", "three"]
    f.sendcmd("TYPE A")
    raw = io.BytesIO()
    conn = f.transfercmd("RETR work/a.txt")
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        raw.write(chunk)
    conn.close()
    f.voidresp()
    assert raw.getvalue() == b"one\r\ntwo\r\nthree\r\n"

    # REST: resume a download, and an upload.
    assert retr(f, "work/b.bin", rest=1000) == data[1000:]
    f.storbinary("STOR work/r.bin", io.BytesIO(data[:5000]))
    f.storbinary("STOR work/r.bin", io.BytesIO(data[5000:]), rest=5000)
    assert retr(f, "work/r.bin") == data
    f.sendcmd("TYPE I")
    expect_error(554, f.transfercmd, "RETR work/b.bin", len(data) + 10)
    expect_error(501, f.sendcmd, "REST -5")

    # APPE, STOU.
    f.storbinary("APPE work/r.bin", io.BytesIO(b"tail"))
    assert retr(f, "work/r.bin") == data + b"tail"
    f.storbinary("APPE work/new.bin", io.BytesIO(b"fresh"))
    assert retr(f, "work/new.bin") == b"fresh"
    conn, _ = f.ntransfercmd("STOU work/unique")
    conn.sendall(b"u1")
    conn.close()
    assert f.voidresp().startswith("226")
    conn = f.transfercmd("STOU work/unique")
    first = f.lastresp
    conn.sendall(b"u2")
    conn.close()
    f.voidresp()
    assert first == "150"
    assert retr(f, "work/unique") == b"u1" and retr(f, "work/unique.1") == b"u2"

    # Listings.
    names = f.nlst("work")
    assert set(names) >= {"b.bin", "a.txt", "r.bin", "new.bin", "unique", "unique.1"}, names
    lines = []
    f.dir("work", lines.append)
    line_re = re.compile(r"^[-dlcbps][-rwxsStT]{9} +\d+ +\S+ +\S+ +\d+ "
                         r"[A-Z][a-z]{2} [ \d]\d (\d\d:\d\d| \d{4}) (.+)$")
    assert all(line_re.match(ln) for ln in lines), lines
    sizes = {line_re.match(ln).group(2): int(ln.split()[4]) for ln in lines}
    assert sizes["b.bin"] == len(data)
    lines = []
    f.dir("", lines.append)
    assert any(ln.startswith("l") and ln.endswith("inside -> data.bin") for ln in lines), lines
    facts = dict(f.mlsd("work"))
    assert facts["b.bin"]["type"] == "file" and facts["b.bin"]["size"] == str(len(data))
    assert re.match(r"\d{14}$", facts["b.bin"]["modify"]) and "r" in facts["b.bin"]["perm"]
    assert len({v["unique"] for v in facts.values()}) == len(facts)
    top = dict(f.mlsd("/"))
    assert top["work"]["type"] == "dir" and top["inside"]["type"] == "file"
    mlst = f.sendcmd("MLST work/b.bin")
    assert mlst.startswith("250-") and "type=file;size=%d;" % len(data) in mlst
    assert f.sendcmd("OPTS MLST type;size;") == "200 MLST OPTS type;size;"
    assert "modify=" not in f.sendcmd("MLST work/b.bin")
    f.sendcmd("OPTS MLST type;size;modify;perm;unique;")

    # STAT: the server, then a file and a folder over the control connection.
    st = f.sendcmd("STAT")
    assert st.startswith("211-") and "Logged in as alice" in st and st.endswith("211 End of status")
    st = f.sendcmd("STAT work")
    assert st.startswith("213-") and "b.bin" in st

    # Rename, delete, chmod.
    f.rename("work/new.bin", "work/renamed.bin")
    assert "renamed.bin" in f.nlst("work") and "new.bin" not in f.nlst("work")
    expect_error(503, f.sendcmd, "RNTO x")
    f.sendcmd("RNFR work/a.txt")
    f.sendcmd("NOOP")  # RNFR is good for the next command only
    expect_error(503, f.sendcmd, "RNTO work/z.txt")
    assert f.sendcmd("SITE CHMOD 600 work/renamed.bin").startswith("200")
    assert os.stat(os.path.join(home, "work", "renamed.bin")).st_mode & 0o777 == 0o600
    expect_error(501, f.sendcmd, "SITE CHMOD 99x work/renamed.bin")
    f.delete("work/renamed.bin")
    expect_error(550, f.delete, "work/renamed.bin")
    expect_error(550, f.rmd, "work")  # not empty
    for name in f.nlst("work"):
        f.delete("work/" + name)
    f.rmd("work")

    # UTF-8 names (RFC 2640).
    f.encoding = "utf-8"
    f.storbinary("STOR héllo wörld ✓.txt", io.BytesIO(b"utf8"))
    assert "héllo wörld ✓.txt" in f.nlst()
    assert os.path.exists(os.path.join(home, "héllo wörld ✓.txt"))
    f.delete("héllo wörld ✓.txt")

    # Active mode (PORT), and EPRT by hand; EPSV; then EPSV ALL.
    f.set_pasv(False)
    assert retr(f, "data.bin") == bytes(range(256)) * 64
    lsock = socket.create_server(("127.0.0.1", 0))
    f.sendcmd("EPRT |1|127.0.0.1|%d|" % lsock.getsockname()[1])
    f.putcmd("RETR data.bin")
    assert f.getresp().startswith("150")
    c, _ = lsock.accept()
    got = b""
    while chunk := c.recv(65536):
        got += chunk
    c.close()
    lsock.close()
    assert f.voidresp().startswith("226") and got == bytes(range(256)) * 64
    f.set_pasv(True)
    assert re.match(r"229 Entering Extended Passive Mode \(\|\|\|\d+\|\)", f.sendcmd("EPSV"))
    expect_error(522, f.sendcmd, "EPSV 2")
    assert f.sendcmd("EPSV ALL").startswith("200")
    expect_error(500, f.sendcmd, "PASV")
    expect_error(500, f.sendcmd, "PORT 127,0,0,1,200,10")
    f.af = socket.AF_INET6  # ftplib then uses EPSV
    assert retr(f, "data.bin") == bytes(range(256)) * 64

    # REIN: back to the login.
    assert f.sendcmd("REIN").startswith("220")
    expect_error(530, f.sendcmd, "PWD")
    f.login("bob", "builder")
    assert f.pwd() == "/" and f.nlst() == ["readme"]
    f.quit()


def test_permissions(env):
    srv, port, root, tmp = env
    f = login(port, "bob", "builder")  # read only
    assert retr(f, "readme") == b"bob's\n"
    expect_error(553, f.storbinary, "STOR x", io.BytesIO(b"x"))
    expect_error(550, f.delete, "readme")
    expect_error(550, f.mkd, "d")
    expect_error(550, f.sendcmd, "RNFR readme")
    expect_error(550, f.sendcmd, "SITE CHMOD 777 readme")
    f.quit()
    a = login(port, "anonymous", "x@example.com")
    expect_error(553, a.storbinary, "STOR pub/x", io.BytesIO(b"x"))
    expect_error(550, a.delete, "pub/hello.txt")
    expect_error(550, a.mkd, "pub/new")
    a.storbinary("STOR incoming/drop.txt", io.BytesIO(b"dropped"))
    with open(os.path.join(root, "incoming", "drop.txt"), "rb") as fh:
        assert fh.read() == b"dropped"
    expect_error(553, a.storbinary, "STOR incoming/drop.txt", io.BytesIO(b"again"))  # no overwrite
    expect_error(553, a.storbinary, "APPE incoming/drop.txt", io.BytesIO(b"more"))
    expect_error(550, retr, a, "incoming/drop.txt")  # a drop box: no reading
    expect_error(550, a.nlst, "incoming")
    a.quit()
    os.unlink(os.path.join(root, "incoming", "drop.txt"))


def test_confinement(env):
    srv, port, root, tmp = env
    f = login(port)
    for path in ("../../../secret.txt", "/../../../secret.txt", "..//..//../secret.txt",
                 "escape", "escapedir/secret.txt", "./escapedir/../escape",
                 "%2e%2e/%2e%2e/secret.txt", "/etc/passwd", "../../../../../../etc/passwd",
                 "~root/.bashrc"):
        expect_error(550, retr, f, path)
        expect_error(550, f.size, path)
    expect_error(550, f.cwd, "escapedir")
    f.cwd("../../..")  # ".." at the root stays at the root, as in a chroot
    assert f.pwd() == "/" and "data.bin" in f.nlst()
    expect_error(550, f.nlst, "escapedir")
    expect_error(550, f.sendcmd, "MLST escape")
    expect_error(550, f.storbinary, "STOR escapedir/planted", io.BytesIO(b"x"))
    expect_error(550, f.mkd, "escapedir/newdir")
    expect_error(550, f.sendcmd, "SITE CHMOD 777 escape")
    assert not os.path.exists(os.path.join(tmp, "planted"))
    assert os.stat(os.path.join(tmp, "secret.txt")).st_mode & 0o777 != 0o777
    assert retr(f, "inside") == bytes(range(256)) * 64  # a link inside is fine
    f.quit()
    assert "leads outside the root" in srv.log_text()


def raw_session(port, user="alice", password="wonderland"):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    r = s.makefile("rb")
    assert r.readline().startswith(b"220")

    def cmd(line):
        s.sendall(line + b"\r\n")
        return r.readline().decode("utf-8", "replace")
    if user:
        assert cmd(b"USER " + user.encode()).startswith("331")
        assert cmd(b"PASS " + password.encode()).startswith("230")
    return s, r, cmd


def pasv_port(reply):
    nums = re.search(r"\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)", reply).groups()
    return int(nums[4]) * 256 + int(nums[5])


def test_hostile_input(env):
    srv, port, root, tmp = env
    s, r, cmd = raw_session(port)
    assert cmd(b"TYPE I").startswith("200")
    assert cmd(b"PORT 10,0,0,1,200,10").startswith("504")  # bounce: another host
    assert cmd(b"PORT 127,0,0,1,0,21").startswith("504")  # a low port
    assert cmd(b"EPRT |1|192.0.2.1|5000|").startswith("504")
    assert cmd(b"EPRT |2|::1|5000|").startswith("522")
    for bad in (b"PORT 1,2,3", b"PORT 300,0,0,1,1,1", b"PORT a,b,c,d,e,f", b"EPRT |3|x|1|",
                b"EPRT |1|127.0.0.1|99999|", b"EPRT garbage"):
        assert cmd(bad).startswith("501"), bad
    assert cmd(b"A" * 10000).startswith("500")  # over-long line, then the session goes on
    assert cmd(b"NOOP").startswith("200")
    assert cmd(b"XYZZY").startswith("500")
    assert cmd(b"RETRIEVE x").startswith("500")
    assert cmd(b"").startswith("500")
    assert cmd(b"NO\x00OP").startswith("500")
    assert cmd(b"RNTO x").startswith("503")
    assert cmd(b"\xff\xf4\xff\xf2NOOP").startswith("200")  # Telnet IP/DM are dropped
    assert cmd(b"CWD\tx").startswith("500")
    assert cmd(b"REST 12abc").startswith("501")
    assert cmd(b"RETR data.bin").startswith("425")  # no data channel yet

    # A data connection from a foreign address is refused; the client's own works.
    reply = cmd(b"PASV")
    dport = pasv_port(reply)
    intruder = socket.socket()
    intruder.bind(("127.0.0.2", 0))
    intruder.settimeout(5)
    intruder.connect(("127.0.0.1", dport))
    assert intruder.recv(10) == b""  # closed at once
    intruder.close()
    d = socket.create_connection(("127.0.0.1", dport), timeout=10)
    s.sendall(b"RETR data.bin\r\n")
    assert r.readline().startswith(b"150")
    got = b""
    while chunk := d.recv(65536):
        got += chunk
    assert got == bytes(range(256)) * 64 and r.readline().startswith(b"226")
    assert "data connection from foreign address 127.0.0.2 refused" in srv.log_text()

    # A PASV nobody connects to is closed after data_timeout.
    dport = pasv_port(cmd(b"PASV"))
    wait_for(lambda: "passive port unused" in srv.log_text(), 10, "the unused port closed")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", dport), timeout=2).recv(1)
    assert cmd(b"NOOP").startswith("200")
    r.close()
    s.close()


def test_review_findings(env):
    """REST holds only up to the transfer; no setuid bit from SITE CHMOD;
    names with CR/LF cannot break a reply; failed active connections in a
    pipeline; QUIT then ABOR; a data connection nobody uses."""
    srv, port, root, tmp = env
    home = os.path.join(root, "home", "alice")
    f = login(port)
    f.voidcmd("TYPE I")
    f.sendcmd("REST 100")
    f.nlst()  # a LIST/NLST in between drops the REST
    assert retr(f, "data.bin") == bytes(range(256)) * 64
    expect_error(501, f.sendcmd, "SITE CHMOD 4755 data.bin")
    with open(os.path.join(home, "evil\r\n213 End\r\nname"), "w") as fh:
        fh.write("x")
    st = f.sendcmd("STAT /")
    assert st.endswith("213 End of status.") and "evil??213 End??name" in st, st
    assert any("evil??213" in n for n in f.nlst())
    os.unlink(os.path.join(home, "evil\r\n213 End\r\nname"))
    f.quit()

    s, r, cmd = raw_session(port)
    closed = free_port()  # nothing listens there
    s.sendall(b"".join(b"PORT 127,0,0,1,%d,%d\r\nRETR data.bin\r\n" % (closed >> 8, closed & 255)
                       for _ in range(200)))
    for _ in range(200):  # each: PORT ok, 150, then 425 (refused)
        assert r.readline().startswith(b"200")
        assert r.readline().startswith(b"150")
        assert r.readline().startswith(b"425")
    assert cmd(b"NOOP").startswith("200")
    r.close()
    s.close()

    f = login(port, "anonymous", "x")
    f.voidcmd("TYPE I")
    conn = f.transfercmd("RETR pub/big.bin")
    conn.recv(1000)
    f.putcmd("QUIT")  # waits for the transfer's reply...
    f.putcmd("ABOR")
    assert f.getline().startswith("426")
    assert f.getline().startswith("226")
    assert f.getline().startswith("221")  # ... which ABOR gave
    conn.close()
    f.close()

    s, r, cmd = raw_session(port)
    dport = pasv_port(cmd(b"PASV"))
    d = socket.create_connection(("127.0.0.1", dport), timeout=10)
    wait_for(lambda: "data connection unused" in srv.log_text(), 10, "the unused connection closed")
    assert d.recv(10) == b""
    assert cmd(b"NOOP").startswith("200")
    r.close()
    s.close()


def test_broken_upload_never_replaces_the_file(env):
    srv, port, root, tmp = env
    home = os.path.join(root, "home", "alice")
    original = b"the original\n" * 1000
    with open(os.path.join(home, "keep.bin"), "wb") as fh:
        fh.write(original)
    # 1. The client dies mid-upload: control and data close together.
    for n, how in enumerate(("STOR", "APPE")):
        s, r, cmd = raw_session(port)
        assert cmd(b"TYPE I").startswith("200")
        dport = pasv_port(cmd(b"PASV"))
        d = socket.create_connection(("127.0.0.1", dport), timeout=10)
        s.sendall(how.encode() + b" keep.bin\r\n")
        assert r.readline().startswith(b"150")
        d.sendall(os.urandom(300000))
        r.close()  # the client dies: the control connection goes first
        s.close()
        d.close()
        wait_for(lambda: srv.log_text().count("keep.bin: ") > n, 10, "the upload to end")
    # 2. ABOR mid-upload; 3. a reset data connection.
    f = login(port)
    conn = f.transfercmd("STOR keep.bin")
    conn.sendall(os.urandom(200000))
    f.putcmd("ABOR")
    resp = f.getline()
    assert resp.startswith("426"), resp
    assert f.getline().startswith("226")
    conn.close()
    conn = f.transfercmd("STOR keep.bin")
    conn.sendall(os.urandom(100000))
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    conn.close()
    expect_error(426, f.voidresp)
    wait_for(lambda: not [n for n in os.listdir(home) if "medusa-" in n], 10, "no temporaries")
    with open(os.path.join(home, "keep.bin"), "rb") as fh:
        assert fh.read() == original
    f.delete("keep.bin")
    f.quit()


def test_abor_mid_download_and_session_goes_on(env):
    srv, port, root, tmp = env
    f = login(port, "anonymous", "x")
    f.voidcmd("TYPE I")
    conn = f.transfercmd("RETR pub/big.bin")
    conn.recv(65536)
    assert f.abort().startswith("426")  # ftplib sends ABOR with MSG_OOB
    assert f.getline().startswith("226")  # RFC 959: 426 for the transfer, then 226
    conn.close()
    assert f.sendcmd("NOOP").startswith("200")
    # A STAT while a transfer runs tells its progress.
    conn = f.transfercmd("RETR pub/big.bin")
    conn.recv(1000)
    st = f.sendcmd("STAT")
    assert "RETR /pub/big.bin" in st, st
    got = 1000
    while chunk := conn.recv(1 << 20):
        got += len(chunk)
    conn.close()
    f.voidresp()
    assert f.quit().startswith("221")


def test_curl(env):
    srv, port, root, tmp = env
    url = "ftp://alice:wonderland@127.0.0.1:%d/" % port
    src = os.path.join(tmp, "curl-up.bin")
    with open(src, "wb") as fh:
        fh.write(os.urandom(300000))

    def run(*args):
        p = subprocess.run(["curl", "-sS", "--max-time", "30"] + list(args),
                           capture_output=True, timeout=60)
        assert p.returncode == 0, (args, p.stderr)
        return p.stdout
    assert b"data.bin" in run(url)
    assert run(url + "data.bin") == bytes(range(256)) * 64
    run("-T", src, url + "up.bin")
    run("--ftp-pasv", "--disable-epsv", "-o", os.path.join(tmp, "d1"), url + "up.bin")
    run("-P", "127.0.0.1", "-o", os.path.join(tmp, "d2"), url + "up.bin")
    run("-P", "127.0.0.1", "--disable-eprt", "-o", os.path.join(tmp, "d3"), url + "up.bin")
    for d in ("d1", "d2", "d3"):
        with open(os.path.join(tmp, d), "rb") as a, open(src, "rb") as b:
            assert a.read() == b.read(), d
    with open(os.path.join(tmp, "d4"), "wb") as fh, open(src, "rb") as b:
        fh.write(b.read(123456))  # a download cut short...
    run("-C", "-", "-o", os.path.join(tmp, "d4"), url + "up.bin")  # ... resumed
    with open(os.path.join(tmp, "d4"), "rb") as a, open(src, "rb") as b:
        assert a.read() == b.read()
    assert b"data.bin" in run("-l", url).splitlines()
    run("-Q", "-DELE up.bin", url)
    assert b"up.bin" not in run(url)


def test_lftp_mirror_200_files_down_and_up(env):
    srv, port, root, tmp = env
    home = os.path.join(root, "home", "alice")
    tree = os.path.join(home, "tree")
    for i in range(200):
        d = os.path.join(tree, "d%d" % (i % 7), "e%d" % (i % 3))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "f%03d.dat" % i), "wb") as fh:
            fh.write(os.urandom(random.randrange(0, 40000)))
    down = os.path.join(tmp, "mirror-down")
    script = ("set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 20; "
              "open -u alice,wonderland ftp://127.0.0.1:%d; "
              "mirror --parallel=4 tree %s; mirror -R --parallel=4 %s tree-up; bye"
              % (port, down, down))
    p = subprocess.run(["lftp", "-c", script], capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr

    def digest(top):
        out = {}
        for dirpath, _, files in os.walk(top):
            for n in files:
                with open(os.path.join(dirpath, n), "rb") as fh:
                    out[os.path.relpath(os.path.join(dirpath, n), top)] = \
                        hashlib.sha256(fh.read()).hexdigest()
        return out
    want = digest(tree)
    assert len(want) == 200
    assert digest(down) == want
    assert digest(os.path.join(home, "tree-up")) == want


def test_sessions_in_the_console_and_xferlog(env):
    srv, port, root, tmp = env
    # Its own transfers for the logs: a download by alice, an aborted upload,
    # and a failed login.
    g = login(port)
    assert retr(g, "data.bin") == bytes(range(256)) * 64
    conn = g.transfercmd("STOR xferlog-aborted.bin")
    conn.sendall(b"partial")
    g.putcmd("ABOR")
    assert g.getline().startswith("426") and g.getline().startswith("226")
    conn.close()
    g.quit()
    expect_error(530, login, port, "alice", "wrong")
    f = login(port, "anonymous", "x")
    f.voidcmd("TYPE I")
    conn = f.transfercmd("RETR /pub/big.bin")
    conns = [c for c in srv.ctl_json("conns", "files")]
    mine = [c for c in conns if "user anonymous" in c["state"] and "RETR /pub/big.bin" in c["state"]]
    assert mine, conns
    while conn.recv(65536):
        pass
    conn.close()
    f.voidresp()
    srv.ctl("kill", str(mine[0]["id"]))
    with pytest.raises((EOFError, OSError, ftplib.Error)):
        f.sendcmd("NOOP")
    stats = srv.ctl_json("stats")
    ftp = stats["ftp"]
    assert ftp["logins"] >= 1 and ftp["downloads"] >= 1 and ftp["bytes_out"] > 0, ftp
    assert ftp["login_failures"] >= 1
    with open(os.path.join(tmp, "xferlog")) as fh:
        lines = fh.read().splitlines()
    xfer = re.compile(r"^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4} \d+ \S+ \d+ "
                      r"\S+ [ab] _ [oi] [ar] \S+ ftp 0 \* [ci]$")
    assert lines and all(xfer.match(ln) for ln in lines), lines[:5]
    assert any(" /data.bin b _ o r alice ftp 0 * c" in ln for ln in lines)
    assert any(" /xferlog-aborted.bin b _ i r alice ftp 0 * i" in ln for ln in lines)


def test_per_ip_limit_and_idle_timeout():
    tmp = temp_dir()
    make_tree(tmp)
    port = free_port()
    srv = Server(ftp_conf(port, "idle_timeout = 1;", per_ip=3), workers=2, dir=tmp)
    try:
        held = [login(port, "anonymous", "x") for _ in range(3)]
        f = ftplib.FTP()
        with pytest.raises(ftplib.Error) as e:
            f.connect("127.0.0.1", port, timeout=10)
        assert str(e.value).startswith("421")
        for h in held:
            h.close()
        wait_for(lambda: srv.log_text().count("logged out") >= 3, 10, "sessions to end")
        g = login(port, "anonymous", "x")  # room again
        time.sleep(1.6)
        assert g.getline().startswith("421")  # the idle timeout
        assert srv.stop() == 0
    finally:
        if srv.proc.poll() is None:
            srv.stop()


def good_session(port, i):
    f = login(port)
    data = os.urandom(50000 + i)
    f.storbinary("STOR conc-%d.bin" % i, io.BytesIO(data))
    assert retr(f, "conc-%d.bin" % i) == data
    assert retr(f, "data.bin") == bytes(range(256)) * 64
    f.delete("conc-%d.bin" % i)
    f.quit()
    return True


def bad_session(port, i):
    kind = i % 5
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    r = s.makefile("rb")
    r.readline()
    if kind == 0:  # garbage and over-long lines, then vanish
        s.sendall(os.urandom(20000))
    elif kind == 1:  # opens passive ports and never connects
        s.sendall(b"USER anonymous\r\nPASS x\r\nPASV\r\nPASV\r\nEPSV\r\n")
        time.sleep(0.5)
    elif kind == 2:  # a slow, unfinished command
        s.sendall(b"US")
        time.sleep(0.5)
    elif kind == 3:  # leaves mid-download
        s.sendall(b"USER anonymous\r\nPASS x\r\nTYPE I\r\nPASV\r\n")
        for _ in range(4):
            line = r.readline()
        d = socket.create_connection(("127.0.0.1", pasv_port(line.decode())), timeout=10)
        s.sendall(b"RETR pub/big.bin\r\n")
        d.recv(1000)
        d.close()
    else:  # bad logins and bounce attempts
        s.sendall(b"USER alice\r\nPASS no\r\nPORT 10,1,2,3,4,5\r\n")
        time.sleep(0.5)
    r.close()
    s.close()
    return True


def test_100_sessions_half_misbehaving(env):
    srv, port, root, tmp = env
    with concurrent.futures.ThreadPoolExecutor(100) as ex:
        good = [ex.submit(good_session, port, i) for i in range(50)]
        bad = [ex.submit(bad_session, port, i) for i in range(50)]
        assert all(g.result(timeout=120) for g in good)
        for b in bad:
            b.result(timeout=120)
    # Everyone is gone and the server serves on.
    try:
        wait_for(lambda: not srv.ctl_json("conns", "files"), 15, "sessions to end")
    except AssertionError:
        raise AssertionError("still open:\n" + srv.ctl("conns", "files"))
    assert good_session(port, 999)


@pytest.mark.parametrize("how,grace", [("set", 10), ("set", 1), ("drain", 1)])
def test_transfers_while_workers_leave(how, grace):
    """'workers set 1' or 'worker drain ID' while transfers run: with time
    enough, transfers finish and their sessions move; with a short grace
    period, they are cut, the client is told (426), and the session goes on
    on another worker. Nothing arrives corrupted."""
    tmp = temp_dir()
    root = make_tree(tmp)
    port = free_port()
    srv = Server("grace_period = %d;\n" % grace + ftp_conf(port), workers=3, dir=tmp, admin=True)
    try:
        want = hashlib.sha256(open(os.path.join(root, "pub", "big.bin"), "rb").read()).hexdigest()
        results = []

        def slow_download(i):
            f = login(port, "anonymous", "x", timeout=30)
            f.voidcmd("TYPE I")
            h = hashlib.sha256()
            conn = f.transfercmd("RETR pub/big.bin")
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            while chunk := conn.recv(65536):
                h.update(chunk)
                time.sleep(0.002 if grace > 1 else 0.01)
            conn.close()
            try:
                f.voidresp()
                outcome = "complete" if h.hexdigest() == want else "CORRUPT"
            except ftplib.error_temp as e:
                outcome = "told " + str(e)[:3]
            # The session goes on wherever it is now.
            assert retr(f, "pub/hello.txt") == b"line one\nline two\n"
            f.quit()
            results.append(outcome)

        idle = [login(port, "anonymous", "x") for _ in range(30)]
        # Sessions land on every worker, each with its own data channels.
        assert {c["worker"] for c in srv.ctl_json("conns", "files")} == {1, 2, 3}
        threads = [threading.Thread(target=slow_download, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        busy = [c for c in srv.ctl_json("conns", "files") if "RETR" in c["state"]]
        if how == "set":
            on_leaving = [c for c in busy if c["worker"] != 1]  # the highest ids leave
            srv.ctl("workers", "set", "1")
        else:
            busiest = collections.Counter(c["worker"] for c in busy).most_common(1)[0][0]
            on_leaving = [c for c in busy if c["worker"] == busiest]
            srv.ctl("worker", "drain", str(busiest))
        srv.wait_workers_settled(30)
        for t in threads:
            t.join(120)
        assert len(results) == 6 and "CORRUPT" not in results, results
        assert all(r == "complete" or r == "told 426" for r in results), results
        if grace == 1 and on_leaving:  # (none on a leaving worker: 1 run in 729)
            assert "told 426" in results, results
        for f in idle:  # idle sessions moved and go on
            assert f.pwd() == "/" and "pub" in f.nlst()
            f.quit()
        assert srv.stop() == 0
    finally:
        if srv.proc.poll() is None:
            srv.stop()


def test_stop_during_a_transfer_tells_the_client():
    tmp = temp_dir()
    make_tree(tmp)
    port = free_port()
    srv = Server("grace_period = 1;\n" + ftp_conf(port), workers=2, dir=tmp)
    try:
        idle = login(port, "anonymous", "x")
        f = login(port, "anonymous", "x")
        f.voidcmd("TYPE I")
        conn = f.transfercmd("RETR pub/big.bin")
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conn.recv(65536)
        srv.signal(15)
        got = 0
        while chunk := conn.recv(65536):
            got += len(chunk)
            time.sleep(0.01)  # too slow to finish within the grace period
        assert got < BIG
        assert f.getline().startswith("426")
        assert f.getline().startswith("421")
        assert idle.getline().startswith("421")  # an idle session is told at once
        assert srv.proc.wait(20) == 0
    finally:
        if srv.proc.poll() is None:
            srv.stop()


def test_ipv6_epsv_and_eprt():
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    tmp = temp_dir()
    make_tree(tmp)
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    srv = Server(ftp_conf(port).replace('"127.0.0.1:%d"' % port, '"[::1]:%d"' % port),
                 workers=2, dir=tmp)
    try:
        f = ftplib.FTP()
        f.connect("::1", port, timeout=10)
        f.login("alice", "wonderland")
        assert f.af == socket.AF_INET6
        assert retr(f, "data.bin") == bytes(range(256)) * 64  # EPSV
        expect_error(425, f.sendcmd, "PASV")  # IPv4 only
        expect_error(522, f.sendcmd, "EPSV 1")
        f.set_pasv(False)
        assert retr(f, "data.bin") == bytes(range(256)) * 64  # EPRT |2|::1|port|
        expect_error(522, f.sendcmd, "EPRT |1|127.0.0.1|5000|")
        f.quit()
        assert srv.stop() == 0
    finally:
        if srv.proc.poll() is None:
            srv.stop()


def test_storm_of_mutated_sessions(env):
    """The twin of tests/fuzz/ftp_storm.py with a fixed seed: 240 sessions of
    random commands, garbage, abused data connections and resets; every line
    is an FTP reply, and the server serves on."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz"))
    import ftp_storm
    srv, port, root, tmp = env
    problems = []
    rng = random.Random(1)
    for _ in range(8):
        threads = [threading.Thread(target=ftp_storm.session,
                                    args=(port, random.Random(rng.random()), problems))
                   for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not problems, problems[:10]
    assert good_session(port, 4242)
