"""Abuse and limits: per-address connection caps at accept for every
protocol, failed-login throttling shared by every worker (HTTP Basic, FTP,
the console), what reaches the logs and the replies (control characters,
secrets, CR and LF), bare CRs in every line protocol, and running as root."""
import ftplib
import os
import socket
import subprocess
import time

from harness import (MEDUSAD, Admin, ChatClient, Server, chat_conf, free_port, site, temp_dir,
                     wait_for, write_secret)


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
    cport, eport, fport, aport = free_port(), free_port(), free_port(), free_port()
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
