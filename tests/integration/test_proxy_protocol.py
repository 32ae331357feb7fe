"""PROXY protocol v1 and v2 on listeners marked proxy_protocol, with
HAProxy from Debian in front as the real sender: the client's address (not
the balancer's) is in the access log, the console and FTP's per-address
limit, for HTTP, chat and FTP alike; a connection without a valid header
is closed and logged; the same service's plain listener is unaffected."""
import ftplib
import os
import socket
import struct
import subprocess
import time

import pytest

from harness import MEDUSAD, Server, curl, free_port, site, temp_dir, wait_for

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/sbin/haproxy"),
                                reason="haproxy is not installed (packaging/bootstrap installs it)")

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


class HAProxy:
    """TCP frontends, each to a backend address, with send-proxy or send-proxy-v2."""

    def __init__(self, tmp, routes):
        self.ports = {}
        conf = ["global", "  maxconn 200", "defaults", "  mode tcp", "  timeout connect 5s",
                "  timeout client 60s", "  timeout server 60s"]
        for name, (backend, how) in routes.items():
            port = free_port()
            self.ports[name] = port
            conf += ["frontend fe_%s" % name, "  bind 127.0.0.1:%d" % port,
                     "  default_backend be_%s" % name, "backend be_%s" % name,
                     "  server s 127.0.0.1:%d %s" % (backend, how)]
        path = os.path.join(tmp, "haproxy.cfg")
        with open(path, "w") as f:
            f.write("\n".join(conf) + "\n")
        self.proc = subprocess.Popen(["/usr/sbin/haproxy", "-db", "-f", path],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in self.ports.values():
            wait_for(lambda: self._up(port), 10, "haproxy on %d" % port)

    @staticmethod
    def _up(port):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            return False

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def env():
    tmp = temp_dir()
    site(tmp)
    os.makedirs(os.path.join(tmp, "ftp"))
    http_pp, http_plain, chat_pp, ftp_pp = free_port(), free_port(), free_port(), free_port()
    conf = ('http = ( { name = "web"; listen = [ "127.0.0.1:%d proxy_protocol", "127.0.0.1:%d" ];\n'
            ' access_log = "access.log"; vhosts = ( { names = [ "*" ]; handlers = (\n'
            ' { type = "static"; path = "/"; root = "www"; } ); } ); } );\n'
            'chat = ( { name = "chat"; listen = [ "127.0.0.1:%d proxy_protocol" ]; } );\n'
            'ftp = ( { name = "files"; listen = [ "127.0.0.1:%d proxy_protocol" ]; root = "ftp";\n'
            ' anonymous = true; max_sessions_per_ip = 2; } );\n'
            % (http_pp, http_plain, chat_pp, ftp_pp))
    srv = Server(conf, workers=2, dir=tmp, admin=True)
    ha = HAProxy(tmp, {"http1": (http_pp, "send-proxy"), "http2": (http_pp, "send-proxy-v2"),
                       "chat": (chat_pp, "send-proxy-v2"), "ftp": (ftp_pp, "send-proxy")})
    yield srv, ha, {"http_pp": http_pp, "http_plain": http_plain, "chat_pp": chat_pp,
                    "ftp_pp": ftp_pp}, tmp
    ha.stop()
    assert srv.stop() == 0


def access_lines(tmp):
    with open(os.path.join(tmp, "access.log")) as f:
        return f.read().splitlines()


def test_http_through_haproxy_v1_and_v2(env):
    srv, ha, ports, tmp = env
    for fe in ("http1", "http2"):
        assert curl("--interface", "127.0.0.2", "http://127.0.0.1:%d/" % ha.ports[fe])[0] == 200
    # the plain listener takes no header
    assert curl("--interface", "127.0.0.3", "http://127.0.0.1:%d/" % ports["http_plain"])[0] == 200
    wait_for(lambda: len(access_lines(tmp)) >= 3, 10, "access log lines")
    hosts = [ln.split()[0] for ln in access_lines(tmp)]
    assert hosts[-3:] == ["127.0.0.2", "127.0.0.2", "127.0.0.3"], hosts


def test_chat_and_ftp_show_the_client_and_count_it(env):
    srv, ha, ports, tmp = env
    c = socket.socket()
    c.bind(("127.0.0.2", 0))
    c.settimeout(10)
    c.connect(("127.0.0.1", ha.ports["chat"]))
    got = b""
    while b"nickname?: " not in got:
        got += c.recv(1000)
    c.sendall(b"viaproxy\r\n")
    while b"* welcome" not in got:
        got += c.recv(1000)
    peers = [x["peer"] for x in srv.ctl_json("conns", "chat")]
    assert peers and all(p.startswith("127.0.0.2:") for p in peers), peers  # not haproxy's
    c.close()

    # FTP through haproxy from 127.0.0.2 and 127.0.0.3: the per-address limit
    # (2) counts real clients, not the balancer.
    def ftp_from(src):
        f = ftplib.FTP(source_address=(src, 0))
        f.connect("127.0.0.1", ha.ports["ftp"], timeout=10)
        return f
    held = []
    for _ in range(2):
        f = ftp_from("127.0.0.2")
        f.login()
        held.append(f)
    with pytest.raises(ftplib.error_temp) as e:
        ftp_from("127.0.0.2")
    assert str(e.value).startswith("421")
    other = ftp_from("127.0.0.3")
    other.login()
    assert other.pwd() == "/"
    peers = sorted(x["peer"].rsplit(":", 1)[0] for x in srv.ctl_json("conns", "files"))
    assert peers == ["127.0.0.2", "127.0.0.2", "127.0.0.3"], peers
    for f in held + [other]:
        f.quit()


def test_bad_or_missing_headers_are_refused(env):
    srv, ha, ports, tmp = env
    addr = ("127.0.0.1", ports["http_pp"])
    v2_short = V2_SIG + b"\x21\x11\x00\x04" + b"\x01\x02\x03\x04"  # IPv4 needs 12 bytes
    for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
                 b"PROXY TCP4 999.1.1.1 1.1.1.1 1 2\r\n", v2_short,
                 V2_SIG + b"\x31\x11\x00\x00", b"PROXY " + b"1" * 200):
        s = socket.create_connection(addr, timeout=10)
        s.sendall(junk)
        try:
            assert s.recv(100) == b"", junk  # closed, nothing served
        except ConnectionResetError:
            pass
        s.close()
    # Silence: closed after the header's time (5 s).
    s = socket.create_connection(addr, timeout=10)
    t = time.monotonic()
    assert s.recv(100) == b""
    assert time.monotonic() - t >= 4
    s.close()
    log = srv.log_text()
    for why in ("no PROXY protocol header", "malformed PROXY v1 line",
                "bad IPv4 address in PROXY v1 line", "PROXY v2 IPv4 addresses cut short",
                "PROXY v2 header of another version", "PROXY v1 line longer than 107 bytes",
                "no PROXY header in time"):
        assert why in log, why
    # Still serving, header split over several writes included.
    s = socket.create_connection(addr, timeout=10)
    for part in (b"PROXY TCP4 192.0.2.", b"9 127.0.0.1 4000 80\r", b"\nGET / HTTP/1.1\r\n",
                 b"Host: x\r\nConnection: close\r\n\r\n"):
        s.sendall(part)
        time.sleep(0.05)
    assert s.recv(100).startswith(b"HTTP/1.1 200")
    s.close()
    body = socket.inet_pton(socket.AF_INET6, "2001:db8::7") + bytes(16) + struct.pack("!HH", 7, 80)
    s = socket.create_connection(addr, timeout=10)
    s.sendall(V2_SIG + b"\x21\x21" + struct.pack("!H", len(body)) + body +
              b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert s.recv(100).startswith(b"HTTP/1.1 200")
    s.close()
    wait_for(lambda: any(ln.startswith("2001:db8::7 ") for ln in access_lines(tmp)), 10,
             "the v2 client in the access log")
    assert any(ln.startswith("192.0.2.9 ") for ln in access_lines(tmp))


def test_the_console_refuses_proxy_protocol():
    port = free_port()
    tmp = temp_dir()
    with open(os.path.join(tmp, "bad.conf"), "w") as f:
        f.write('admin = { listen = [ "unix:run/admin.sock proxy_protocol" ]; };\n'
                'echo = ( { name = "echo"; listen = [ "127.0.0.1:%d" ]; } );\n' % port)
    p = subprocess.run([MEDUSAD, "-t", "-c", os.path.join(tmp, "bad.conf")],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "the console takes no proxy_protocol" in p.stderr, p.stderr


def test_a_dribbled_header_gets_five_seconds_in_all(env):
    srv, ha, ports, tmp = env
    s = socket.create_connection(("127.0.0.1", ports["http_pp"]), timeout=10)
    t = time.monotonic()
    s.sendall(b"PROXY TCP4 1")
    closed = False
    for _ in range(12):  # a byte a second buys no time
        time.sleep(1)
        try:
            s.sendall(b"0")
        except OSError:
            closed = True
            break
    s.settimeout(1)
    try:
        closed = closed or s.recv(10) == b""
    except ConnectionResetError:
        closed = True
    except socket.timeout:
        pass
    assert closed and time.monotonic() - t < 9
    s.close()


def test_headers_pending_while_a_worker_leaves():
    """Connections still sending their PROXY header when their worker leaves
    are served once the header is there (they move), not dropped."""
    tmp = temp_dir()
    site(tmp)
    port = free_port()
    srv = Server('http = ( { name = "web"; listen = [ "127.0.0.1:%d proxy_protocol" ];\n'
                 ' vhosts = ( { names = [ "*" ]; handlers = (\n'
                 ' { type = "static"; path = "/"; root = "www"; } ); } ); } );\n' % port,
                 workers=3, dir=tmp, admin=True)
    try:
        socks = []
        for i in range(12):
            s = socket.create_connection(("127.0.0.1", port), timeout=20)
            s.sendall(b"PROXY TCP4 192.0.2.%d 127.0.0.1 %d 80" % (i + 1, 1000 + i))
            socks.append(s)
        time.sleep(0.3)
        srv.ctl("workers", "set", "1")
        time.sleep(0.5)
        for s in socks:
            s.sendall(b"\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        for s in socks:
            assert s.recv(100).startswith(b"HTTP/1.1 200")
            s.close()
        srv.wait_workers_settled()
        assert srv.running_workers() == [1]
        assert srv.stop() == 0
    finally:
        if srv.proc.poll() is None:
            srv.stop()
