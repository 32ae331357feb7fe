"""TLS with real clients: curl (HTTPS, SNI, FTPS), openssl s_client
(versions, ALPN, resumption), Python's ssl, http.client and ftplib, lftp
and medusactl; certificates made here with openssl req (RSA and ECDSA).
Also what a hostile or broken client does: plain text to a TLS port, a
truncated ClientHello, handshakes that stall, 2,000 half-open handshakes
while others are served; and certificate reloads, good and broken."""
import ftplib
import hashlib
import http.client
import json
import os
import socket
import ssl
import subprocess
import threading
import time

from harness import (MEDUSACTL, ReusingFTP_TLS, Server, curl, free_port, sanitized, site,
                     temp_dir, wait_for, write_secret)


def make_cert(d, name, cn, kind="ec", sans=None):
    """A self-signed certificate and its key (mode 600) in d: (cert, key)."""
    cert, key = os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")
    alg = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ec"
           else ["-newkey", "rsa:2048"])
    san = ",".join(sans or ["DNS:%s" % cn, "IP:127.0.0.1"])
    subprocess.run(["openssl", "req", "-x509", "-nodes", "-days", "30", "-subj", "/CN=" + cn,
                    "-addext", "subjectAltName=" + san, "-keyout", key, "-out", cert] + alg,
                   check=True, capture_output=True)
    os.chmod(key, 0o600)
    return cert, key


def fingerprint(pem_path):
    with open(pem_path) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    return hashlib.sha256(der).hexdigest()


def served_cert(port, name=None):
    """SHA-256 of the certificate the server presents for SNI name."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname=name) as t:
            return hashlib.sha256(t.getpeercert(binary_form=True)).hexdigest()


def client_ctx(cafile, **kw):
    ctx = ssl.create_default_context(cafile=cafile)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def https_conf(port, tport, d, extra="", vhosts=None, tls_extra="", top=""):
    return top + ('http = ( { name = "web"; listen = [ "127.0.0.1:%d" ]; tls_listen = [ "127.0.0.1:%d" ];\n'
                  ' tls = { certificate = "cert.pem"; key = "cert.key"; %s };\n %s\n'
                  ' vhosts = ( %s ); } );\n' % (port, tport, tls_extra, extra, vhosts or site(d)))


def s_client(port, *args, data=b"", servername="localhost"):
    p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
                        "-servername", servername] + list(args),
                       input=data, capture_output=True, timeout=30)
    return p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


# ---- HTTPS ----

def test_https_with_curl_and_sni_picks_each_virtual_host_certificate():
    d = temp_dir()
    make_cert(d, "cert", "localhost")
    make_cert(d, "a", "a.test", kind="rsa")
    make_cert(d, "b", "b.test", sans=["DNS:b.test", "DNS:*.b.test"])
    for n in ("a", "b"):
        os.makedirs(os.path.join(d, n))
        with open(os.path.join(d, n, "index.html"), "w") as f:
            f.write("site %s\n" % n)
    vh = ('{ names = [ "a.test" ]; tls = { certificate = "a.pem"; key = "a.key"; };'
          '  handlers = ( { type = "static"; path = "/"; root = "a"; } ); },'
          '{ names = [ "*.b.test", "b.test" ]; tls = { certificate = "b.pem"; key = "b.key"; };'
          '  handlers = ( { type = "static"; path = "/"; root = "b"; } ); },' + site(d))
    port, tport = free_port(), free_port()
    s = Server(https_conf(port, tport, d, vhosts=vh), dir=d, workers=2)
    try:
        for host, cert, body in (("a.test", "a.pem", b"site a\n"), ("b.test", "b.pem", b"site b\n"),
                                 ("www.b.test", "b.pem", b"site b\n"),
                                 ("localhost", "cert.pem", b"hello\n")):
            st, h, got, _ = curl("--cacert", os.path.join(d, cert), "--resolve",
                                 "%s:%d:127.0.0.1" % (host, tport), "https://%s:%d/" % (host, tport))
            assert st == 200 and got == body, (host, st, got)
            assert served_cert(tport, host) == fingerprint(os.path.join(d, cert))
        # a name nobody has: the listener's default certificate; a wildcard
        # covers one label only (RFC 6125)
        assert served_cert(tport, "nobody.test") == fingerprint(os.path.join(d, "cert.pem"))
        assert served_cert(tport, "x.y.b.test") == fingerprint(os.path.join(d, "cert.pem"))
        assert served_cert(tport, None) == fingerprint(os.path.join(d, "cert.pem"))
        # the wrong CA fails verification
        st, _, _, err = curl("--cacert", os.path.join(d, "a.pem"), "https://localhost:%d/" % tport,
                             check=False)
        assert st == 0
        # the same virtual hosts in clear on listen
        st, _, got, _ = curl("-H", "Host: a.test", "http://127.0.0.1:%d/" % port)
        assert got == b"site a\n"
        # keep-alive over TLS: many requests on one connection, pipelined too
        ctx = client_ctx(os.path.join(d, "cert.pem"))
        c = http.client.HTTPSConnection("localhost", tport, context=ctx, timeout=10)
        for _ in range(50):
            c.request("GET", "/")
            assert c.getresponse().read() == b"hello\n"
        c.close()
        with socket.create_connection(("127.0.0.1", tport)) as raw:
            t = ctx.wrap_socket(raw, server_hostname="localhost")
            t.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
            got = b""
            while got.count(b"hello\n") < 20:
                chunk = t.recv(65536)
                assert chunk
                got += chunk
    finally:
        s.stop()


def test_versions_alpn_and_cipher_settings():
    d = temp_dir()
    make_cert(d, "cert", "localhost")
    port, tport = free_port(), free_port()
    s = Server(https_conf(port, tport, d), dir=d)
    try:
        out = s_client(tport, "-tls1_2", "-alpn", "h2,http/1.1")
        assert "Protocol  : TLSv1.2" in out and "ALPN protocol: http/1.1" in out, out
        assert "ECDHE" in out  # forward secrecy
        out = s_client(tport, "-tls1_3")
        assert "TLSv1.3" in out, out
        for old in ("-tls1_1", "-tls1"):
            out = s_client(tport, old)
            assert "Cipher is (NONE)" in out or "alert" in out, out
        # no ALPN in common: the handshake goes on without it
        out = s_client(tport, "-alpn", "h2")
        assert "No ALPN negotiated" in out and "Verify return code" in out, out
        # no static RSA, no CBC, no RC4 in TLS 1.2
        for cipher in ("AES128-SHA", "AES256-GCM-SHA384", "ECDHE-RSA-AES128-SHA"):
            out = s_client(tport, "-tls1_2", "-cipher", cipher)
            assert "Cipher is (NONE)" in out or "handshake failure" in out, (cipher, out)
        s.wait_log("TLS handshake failed")
        # narrowed by the configuration
        d2 = temp_dir()
        make_cert(d2, "cert", "localhost")
        p2, t2 = free_port(), free_port()
        s2 = Server(https_conf(p2, t2, d2, tls_extra='protocols = [ "TLSv1.3" ];'), dir=d2)
        try:
            assert "Cipher is (NONE)" in s_client(t2, "-tls1_2") or "alert" in s_client(t2, "-tls1_2")
            assert "TLSv1.3" in s_client(t2, "-tls1_3")
        finally:
            s2.stop()
    finally:
        s.stop()


def test_sessions_resume_on_every_worker_with_tickets():
    d = temp_dir()
    make_cert(d, "cert", "localhost")
    port, tport = free_port(), free_port()
    site(d)
    vh = ('{ names = [ "*" ]; handlers = ( { type = "status"; path = "/status"; },'
          ' { type = "static"; path = "/"; root = "www"; } ); }')
    s = Server(https_conf(port, tport, d, vhosts=vh), dir=d, workers=2, admin=True)
    try:
        for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = client_ctx(os.path.join(d, "cert.pem"), maximum_version=version)
            first = http.client.HTTPSConnection("localhost", tport, context=ctx, timeout=10)
            first.request("GET", "/")
            first.getresponse().read()  # a TLS 1.3 ticket comes after the handshake
            session = first.sock.session
            assert session is not None and session.has_ticket
            first.close()
            held = []
            for _ in range(12):
                raw = socket.create_connection(("127.0.0.1", tport), timeout=10)
                t = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
                assert t.session_reused, version
                held.append(t)
            conns = s.ctl_json("conns")
            workers = {c["worker"] for c in conns if c["service"] == "web"}
            assert workers == {1, 2}, conns  # resumed on both workers
            for t in held:
                t.close()
        st = s.ctl_json("stats")["tls"]
        page = curl("--cacert", os.path.join(d, "cert.pem"), "https://localhost:%d/status" % tport)[2]
        assert b"<h2>tls</h2>" in page and b"<th>tlsv1.3</th>" in page and b"kernel" in page
        metrics = curl("--cacert", os.path.join(d, "cert.pem"), "https://localhost:%d/metrics" % tport)[2]
        assert b'medusa_tls_protocol_handshakes_total{version="TLSv1.3"}' in metrics
        assert st["resumed"] >= 24 and st["tlsv1.2"] >= 13 and st["tlsv1.3"] >= 13, st
        # openssl s_client, a session file across processes
        sess = os.path.join(d, "sess.pem")
        s_client(tport, "-tls1_3", "-ign_eof", "-sess_out", sess, data=b"GET / HTTP/1.0\r\n\r\n")
        assert "Reused, TLSv1.3" in s_client(tport, "-tls1_3", "-sess_in", sess)
    finally:
        s.stop()


def test_ticket_keys_rotate_and_old_tickets_expire():
    d = temp_dir()
    make_cert(d, "cert", "localhost")
    port, tport = free_port(), free_port()
    s = Server(https_conf(port, tport, d, top="tls_ticket_rotate = 1;\n"), dir=d, workers=2)
    try:
        ctx = client_ctx(os.path.join(d, "cert.pem"), maximum_version=ssl.TLSVersion.TLSv1_2)

        def connect(session=None):
            raw = socket.create_connection(("127.0.0.1", tport), timeout=10)
            t = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
            reused, sess = t.session_reused, t.session
            t.close()
            return reused, sess

        _, session = connect()
        time.sleep(1.3)  # one rotation: the key still opens it (and a new ticket comes)
        reused, _ = connect(session)
        assert reused
        time.sleep(4.5)  # three rotations later the key is gone: a full handshake
        reused, _ = connect(session)
        assert not reused
    finally:
        s.stop()


def test_static_files_over_tls_big_and_ranged():
    d = temp_dir()
    make_cert(d, "cert", "localhost", kind="rsa")
    site(d)
    big = os.urandom(3 << 20)
    with open(os.path.join(d, "www", "big.bin"), "wb") as f:
        f.write(big)
    port, tport = free_port(), free_port()
    s = Server(https_conf(port, tport, d), dir=d)
    try:
        st, _, got, _ = curl("--cacert", os.path.join(d, "cert.pem"),
                             "https://localhost:%d/big.bin" % tport)
        assert st == 200 and got == big
        st, _, got, _ = curl("--cacert", os.path.join(d, "cert.pem"), "-r", "1000-99999",
                             "https://localhost:%d/big.bin" % tport)
        assert st == 206 and got == big[1000:100000]
        # a slow reader gets everything, a little at a time
        ctx = client_ctx(os.path.join(d, "cert.pem"))
        c = http.client.HTTPSConnection("localhost", tport, context=ctx, timeout=20)
        c.request("GET", "/big.bin")
        r = c.getresponse()
        got = b""
        while True:
            chunk = r.read(256 << 10)
            if not chunk:
                break
            got += chunk
            time.sleep(0.01)
        assert got == big
        c.close()
    finally:
        s.stop()


def test_redirect_to_https_hsts_and_forwarded_proto():
    d = temp_dir()
    make_cert(d, "cert", "localhost")
    port, tport = free_port(), free_port()
    vh = ('{ names = [ "*" ]; handlers = ( { type = "redirect"; path = "/"; to_https = true;'
          ' https_port = %d; methods = [ "GET", "HEAD" ]; } ); }' % tport)
    conf = ('http = ( { name = "plain"; listen = [ "127.0.0.1:%d" ]; vhosts = ( %s ); },\n'
            '  { name = "web"; tls_listen = [ "127.0.0.1:%d" ];'
            '    tls = { certificate = "cert.pem"; key = "cert.key"; };'
            '    hsts = "max-age=63072000; includeSubDomains"; vhosts = ( %s ); } );\n'
            % (port, vh, tport, site(d)))
    s = Server(conf, dir=d)
    try:
        st, h, _, _ = curl("http://localhost:%d/a/b?x=1&y=2" % port)
        assert st == 301 and h["location"] == "https://localhost:%d/a/b?x=1&y=2" % tport, h
        assert "strict-transport-security" not in h  # never over plain HTTP
        st, h, got, _ = curl("--cacert", os.path.join(d, "cert.pem"), h["location"].split("/a/")[0] + "/")
        assert st == 200 and got == b"hello\n"
        assert h["strict-transport-security"] == "max-age=63072000; includeSubDomains"
    finally:
        s.stop()
    # hsts without TLS is a mistake the check names
    d2 = temp_dir()
    with open(os.path.join(d2, "m.conf"), "w") as f:
        f.write('http = ( { name = "w"; listen = [ "127.0.0.1:%d" ]; hsts = "max-age=1";\n'
                ' vhosts = ( %s ); } );\n' % (free_port(), site(d2)))
    p = subprocess.run([os.environ.get("MEDUSAD", "build/medusad"), "-t", "-c",
                        os.path.join(d2, "m.conf")], capture_output=True, text=True)
    assert p.returncode == 1 and "m.conf:1: 'hsts' is sent over TLS only" in p.stderr, p.stderr


# ---- reloads ----

def test_reload_swaps_the_certificate_while_a_download_runs():
    d = temp_dir()
    make_cert(d, "cert", "localhost")
    site(d)
    big = os.urandom(24 << 20)
    with open(os.path.join(d, "www", "big.bin"), "wb") as f:
        f.write(big)
    port, tport = free_port(), free_port()
    conf = https_conf(port, tport, d)
    s = Server(conf, dir=d)
    try:
        old = fingerprint(os.path.join(d, "cert.pem"))
        assert served_cert(tport) == old
        ctx = client_ctx(os.path.join(d, "cert.pem"))
        c = http.client.HTTPSConnection("localhost", tport, context=ctx, timeout=30)
        c.request("GET", "/big.bin")
        r = c.getresponse()
        got = r.read(1 << 20)
        # a new key pair, in place
        os.rename(os.path.join(d, "cert.pem"), os.path.join(d, "old.pem"))
        make_cert(d, "cert", "localhost")
        new = fingerprint(os.path.join(d, "cert.pem"))
        assert "configuration reloaded" in s.reload(conf)
        assert served_cert(tport) == new  # new handshakes: the new certificate
        got += r.read()  # the old connection goes on to the end
        assert got == big
        # its keep-alive connection still works, with the old certificate
        c.request("GET", "/")
        assert c.getresponse().read() == b"hello\n"
        c.close()
        # a broken certificate: refused with file:line, nothing changes
        with open(os.path.join(d, "cert.pem"), "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
        out = s.reload(conf)
        assert "reload failed" in out and "medusa.conf:" in out and "certificate" in out, out
        assert served_cert(tport) == new
        # a key others can read: refused
        make_cert(d, "cert", "localhost")
        os.chmod(os.path.join(d, "cert.key"), 0o644)
        out = s.reload(conf)
        assert "reload failed" in out and "chmod 600" in out, out
        # a key that is not the certificate's
        os.chmod(os.path.join(d, "cert.key"), 0o600)
        make_cert(d, "other", "localhost")
        os.rename(os.path.join(d, "other.key"), os.path.join(d, "cert.key"))
        out = s.reload(conf)
        assert "reload failed" in out and "cert.key" in out and "mismatch" in out, out
        assert served_cert(tport) == new
    finally:
        s.stop()


def test_configuration_errors_name_the_line():
    d = temp_dir()
    make_cert(d, "cert", "localhost")
    site(d)
    cases = [
        ('tls_listen = [ "127.0.0.1:%d" ];' % free_port(), "'tls_listen' needs a 'tls' block"),
        ('tls = { certificate = "cert.pem"; key = "cert.key"; };', "'tls' has no listener"),
        ('tls_listen = [ "127.0.0.1:%d" ]; tls = { certificate = "nope.pem"; key = "cert.key"; };'
         % free_port(), "certificate %s/nope.pem" % d),
        ('tls_listen = [ "127.0.0.1:%d" ]; tls = { certificate = "cert.pem"; key = "cert.key";'
         ' protocols = [ "TLSv1.1" ]; };' % free_port(), "older ones are not offered"),
        ('tls_listen = [ "127.0.0.1:%d" ]; tls = { certificate = "cert.pem"; key = "cert.key";'
         ' ciphers = "NOPE"; };' % free_port(), "ciphers 'NOPE'"),
        ('tls_listen = [ "127.0.0.1:%d" ]; tls = { certificate = "cert.pem"; key = "cert.key";'
         ' colour = 1; };' % free_port(), "colour"),
    ]
    for extra, msg in cases:
        conf = os.path.join(d, "m.conf")
        with open(conf, "w") as f:
            f.write('http = ( { name = "w"; listen = [ "127.0.0.1:%d" ];\n %s\n vhosts = ( %s ); } );\n'
                    % (free_port(), extra, site(d)))
        p = subprocess.run([os.environ.get("MEDUSAD", "build/medusad"), "-t", "-c", conf],
                           capture_output=True, text=True)
        assert p.returncode == 1 and "m.conf:2:" in p.stderr and msg in p.stderr, (extra, p.stderr)


# ---- hostile clients ----

def hello_bytes():
    """A real ClientHello, as a client sends it."""
    a, b = socket.socketpair()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, outg, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    a.close()
    b.close()
    return outg.read()


def test_hostile_handshakes_are_refused_and_others_are_served():
    d = temp_dir()
    make_cert(d, "cert", "localhost")
    port, tport = free_port(), free_port()
    s = Server(https_conf(port, tport, d, tls_extra="handshake_timeout = 2;"), dir=d, workers=2,
               admin=True)
    try:
        cafile = os.path.join(d, "cert.pem")
        # plain HTTP to the TLS port: closed, logged
        with socket.create_connection(("127.0.0.1", tport), timeout=10) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            c.settimeout(5)
            try:  # an alert, then the end (or a reset)
                while c.recv(4096):
                    pass
            except ConnectionResetError:
                pass
        s.wait_log("TLS handshake failed")
        # a truncated ClientHello, then the client goes away
        hello = hello_bytes()
        with socket.create_connection(("127.0.0.1", tport), timeout=10) as c:
            c.sendall(hello[:len(hello) // 2])
        # a stalled handshake: closed after handshake_timeout
        c = socket.create_connection(("127.0.0.1", tport), timeout=10)
        c.sendall(hello[:20])
        t0 = time.monotonic()
        c.settimeout(10)
        assert c.recv(100) == b""
        assert 1.5 < time.monotonic() - t0 < 6
        c.close()
        s.wait_log("no handshake within 2000 ms")
        # 2,000 half-open handshakes while normal clients are served
        n = 400 if sanitized() else 2000
        socks = []
        for i in range(n):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", tport))
            socks.append(c)
        time.sleep(0.3)
        for c in socks:
            try:
                c.send(hello[:30])
            except OSError:
                pass
        for _ in range(20):
            st, _, got, _ = curl("--cacert", cafile, "https://localhost:%d/" % tport)
            assert st == 200 and got == b"hello\n"
        # the half-open ones are shown as such, and all go at the timeout
        assert "TLS handshake" in s.ctl("conns")
        wait_for(lambda: s.ctl_json("stats")["tls"]["handshake_failures"] >= n, 20,
                 "half-open handshakes to time out")
        for c in socks:
            c.close()
        st = s.ctl_json("stats")
        assert sum(w["connections_active"] for w in st["workers"]) == 0, st["workers"]
        st, _, got, _ = curl("--cacert", cafile, "https://localhost:%d/" % tport)
        assert st == 200
    finally:
        s.stop()


def test_idle_tls_keepalive_connections_move_when_the_server_scales_down():
    d = temp_dir()
    make_cert(d, "cert", "localhost")
    port, tport = free_port(), free_port()
    s = Server(https_conf(port, tport, d), dir=d, workers=3, admin=True)
    try:
        ctx = client_ctx(os.path.join(d, "cert.pem"))
        conns = []
        for _ in range(12):
            c = http.client.HTTPSConnection("localhost", tport, context=ctx, timeout=10)
            c.request("GET", "/")
            assert c.getresponse().read() == b"hello\n"
            conns.append(c)
        s.ctl("workers", "set", "1")
        s.wait_workers_settled()
        for c in conns:  # the same TLS connections, now all on worker 1
            c.request("GET", "/")
            assert c.getresponse().read() == b"hello\n"
        listed = s.ctl_json("conns")
        assert {c["worker"] for c in listed if c["service"] == "web"} == {1}
        for c in conns:
            c.close()
    finally:
        s.stop()


# ---- other protocols ----

def test_echo_and_chat_over_tls():
    d = temp_dir()
    make_cert(d, "cert", "localhost")
    eport, cport = free_port(), free_port()
    conf = ('echo = ( { name = "echo"; tls_listen = [ "127.0.0.1:%d" ];'
            ' tls = { certificate = "cert.pem"; key = "cert.key"; }; } );\n'
            'chat = ( { name = "chat"; tls_listen = [ "127.0.0.1:%d" ];'
            ' tls = { certificate = "cert.pem"; key = "cert.key"; }; } );\n' % (eport, cport))
    s = Server(conf, dir=d, workers=2)
    try:
        ctx = client_ctx(os.path.join(d, "cert.pem"))
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", eport), timeout=10),
                             server_hostname="localhost") as t:
            data = os.urandom(200000)
            threading.Thread(target=t.sendall, args=(data,)).start()
            got = b""
            while len(got) < len(data):
                got += t.recv(65536)
            assert got == data
        people = []
        for nick in ("ann", "bob"):
            t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", cport), timeout=10),
                                server_hostname="localhost")
            t.sendall(nick.encode() + b"\r\n")
            people.append(t)
        time.sleep(0.3)
        people[0].sendall(b"hello over tls\r\n")
        got = b""
        deadline = time.monotonic() + 10
        while b"hello over tls" not in got and time.monotonic() < deadline:
            got += people[1].recv(4096)
        assert b"hello over tls" in got
        for t in people:
            t.close()
    finally:
        s.stop()


def test_tls_chat_sessions_are_told_when_their_worker_leaves():
    """A TLS session on a bufferevent cannot move between workers: when the
    server scales down, its users hear why, and it ends within the grace."""
    d = temp_dir()
    make_cert(d, "cert", "localhost")
    cport = free_port()
    conf = ('grace_period = 2;\n'
            'chat = ( { name = "chat"; tls_listen = [ "127.0.0.1:%d" ];'
            ' tls = { certificate = "cert.pem"; key = "cert.key"; }; } );\n' % cport)
    s = Server(conf, dir=d, workers=2, admin=True)
    try:
        ctx = client_ctx(os.path.join(d, "cert.pem"))
        users = []
        for i in range(12):
            t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", cport), timeout=10),
                                server_hostname="localhost")
            t.sendall(b"u%d\r\n" % i)
            users.append(t)
        wait_for(lambda: len([c for c in s.ctl_json("conns") if c["service"] == "chat"]) == 12,
                 10, "12 chat users")
        on2 = {int(c["peer"].rsplit(":", 1)[1]) for c in s.ctl_json("conns") if c["worker"] == 2}
        assert on2, "no user on worker 2"
        s.ctl("workers", "set", "1")
        heard = 0
        for t in users:
            if t.getsockname()[1] not in on2:
                continue
            t.settimeout(10)
            got = b""
            try:
                while b"worker is leaving" not in got:
                    chunk = t.recv(4096)
                    if not chunk:
                        break
                    got += chunk
            except (socket.timeout, ssl.SSLError):
                pass
            heard += b"worker is leaving" in got
        assert heard == len(on2), (heard, len(on2))
        s.wait_workers_settled()
        assert {c["worker"] for c in s.ctl_json("conns")} <= {1}
        for t in users:
            t.close()
    finally:
        s.stop()


def ftps_conf(d, port, tport, extra=""):
    os.makedirs(os.path.join(d, "ftp", "up"), exist_ok=True)
    return ('ftp = ( { name = "files"; listen = [ "127.0.0.1:%d" ]; tls_listen = [ "127.0.0.1:%d" ];'
            ' root = "ftp"; anonymous = true; anonymous_upload = "/up"; users = "ftpusers"; %s\n'
            ' tls = { certificate = "cert.pem"; key = "cert.key"; }; } );\n'
            % (port, tport, extra))


def ftps_session(cls, ctx, port):
    """An explicit FTPS session, logged in anonymously, data in TLS."""
    f = cls(context=ctx)
    f.connect("localhost", port, timeout=20)
    f.auth()
    f.login()
    f.prot_p()
    return f


def test_ftps_explicit_and_implicit_with_curl_lftp_and_ftplib():
    d = temp_dir()
    make_cert(d, "cert", "localhost")
    os.makedirs(os.path.join(d, "ftp"))
    big = os.urandom(5 << 20)
    with open(os.path.join(d, "ftp", "big.bin"), "wb") as f:
        f.write(big)
    with open(os.path.join(d, "ftpusers"), "w") as f:
        f.write("")
    port, tport = free_port(), free_port()
    conf = ftps_conf(d, port, tport)
    s = Server(conf, dir=d, workers=2, admin=True)
    try:
        cafile = os.path.join(d, "cert.pem")
        out = os.path.join(d, "got.bin")
        # explicit: AUTH TLS on the plain port, PROT P data
        subprocess.run(["curl", "-sS", "--ssl-reqd", "--cacert", cafile, "-o", out,
                        "ftp://localhost:%d/big.bin" % port], check=True, timeout=60)
        assert open(out, "rb").read() == big
        # implicit: TLS from the first byte
        subprocess.run(["curl", "-sS", "--cacert", cafile, "-o", out,
                        "ftps://localhost:%d/big.bin" % tport], check=True, timeout=60)
        assert open(out, "rb").read() == big
        # upload over TLS
        subprocess.run(["curl", "-sS", "--ftp-ssl-reqd", "--cacert", cafile, "-T", out,
                        "ftp://localhost:%d/up/c.bin" % port], check=True, timeout=60)
        assert open(os.path.join(d, "ftp", "up", "c.bin"), "rb").read() == big
        # lftp with ftp:ssl-force and ftp:ssl-protect-data
        p = subprocess.run(["lftp", "-u", "anonymous,x", "-p", str(port), "-e",
                            "set ftp:ssl-force true; set ftp:ssl-protect-data true; "
                            "set ssl:ca-file %s; get big.bin -o %s; cls -1; put %s -o up/l.bin; bye"
                            % (cafile, out + "2", cafile), "localhost"],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert open(out + "2", "rb").read() == big and "big.bin" in p.stdout
        assert open(os.path.join(d, "ftp", "up", "l.bin"), "rb").read() == open(cafile, "rb").read()
        # ftplib resuming the session on its data connections
        ctx = client_ctx(cafile)
        f = ftps_session(ReusingFTP_TLS, ctx, port)
        got = []
        f.retrbinary("RETR big.bin", got.append)
        assert b"".join(got) == big
        assert "big.bin" in f.nlst()
        f.quit()
        # stock ftplib does not resume: its data connection is refused (522)
        f = ftps_session(ftplib.FTP_TLS, ctx, port)
        try:
            f.retrbinary("RETR big.bin", lambda b: None)
            assert False, "a data connection without session reuse was accepted"
        except ftplib.error_perm as e:
            assert str(e).startswith("522"), e
        f.quit()
        s.wait_log("did not resume the TLS session")
        # a data connection that resumes another control connection's
        # session (say, the attacker's own, from behind the same NAT): 522
        a = ftps_session(ReusingFTP_TLS, ctx, port)
        a.nlst()  # its session now has its tickets
        b = ftps_session(ReusingFTP_TLS, ctx, port)
        conn, _ = ftplib.FTP.ntransfercmd(b, "NLST")  # b's data connection resumes a's session
        try:
            b.context.wrap_socket(conn, server_hostname="localhost", session=a.sock.session)
        except (ssl.SSLError, OSError):
            pass
        try:
            b.voidresp()
            assert False, "a data connection with another session was accepted"
        except ftplib.error_perm as e:
            assert str(e).startswith("522"), e
        s.wait_log("of its control connection")
        a.quit()
        b.quit()
        # an upload cut short (no close_notify on its data connection): 426
        f = ftps_session(ReusingFTP_TLS, ctx, port)
        conn = f.transfercmd("STOR up/cut.bin")
        conn.sendall(b"x" * 100000)
        socket.socket(fileno=conn.detach()).close()  # TCP's end, without TLS's close_notify
        try:
            f.voidresp()
            assert False, "an upload cut short was accepted"
        except ftplib.error_temp as e:
            assert str(e).startswith("426"), e
        assert not os.path.exists(os.path.join(d, "ftp", "up", "cut.bin"))
        f.quit()
        st = s.ctl_json("stats")["tls"]
        assert st["resumed"] >= 4 and st["handshakes"] >= 10, st
    finally:
        s.stop()


def test_ftps_commands_policy_and_injection():
    d = temp_dir()
    make_cert(d, "cert", "localhost")
    os.makedirs(os.path.join(d, "ftp"))
    with open(os.path.join(d, "ftp", "a.txt"), "w") as f:
        f.write("a\n")
    with open(os.path.join(d, "ftpusers"), "w") as f:
        f.write("")
    port, tport = free_port(), free_port()
    conf = ftps_conf(d, port, tport, extra="tls_required = true;")
    s = Server(conf, dir=d)
    try:
        ctx = client_ctx(os.path.join(d, "cert.pem"))
        f = ftplib.FTP()
        f.connect("localhost", port, timeout=10)
        feat = f.sendcmd("FEAT")
        assert "AUTH TLS" in feat and "PBSZ" in feat and "PROT" in feat
        for cmd, code in (("USER anonymous", "530"), ("PBSZ 0", "503"), ("PROT P", "503"),
                          ("AUTH KERBEROS", "504")):
            try:
                f.sendcmd(cmd)
                assert False, cmd
            except ftplib.error_perm as e:
                assert str(e).startswith(code), (cmd, e)
            except ftplib.error_reply as e:
                assert str(e).startswith(code), (cmd, e)
        f.close()
        f = ReusingFTP_TLS(context=ctx)
        f.connect("localhost", port, timeout=10)
        f.auth()
        f.login()
        f.sendcmd("PBSZ 0")
        for cmd, code in (("CCC", "534"), ("PROT C", "534"), ("PROT S", "536")):
            try:
                f.sendcmd(cmd)
                assert False, cmd
            except ftplib.error_perm as e:
                assert str(e).startswith(code), (cmd, e)
        try:  # PBSZ given, PROT P not yet: data in clear is refused
            f.retrlines("LIST", lambda line: None)
            assert False
        except ftplib.error_perm as e:
            assert str(e).startswith("521"), e
        f.prot_p()
        lines = []
        f.retrlines("LIST", lines.append)
        assert any("a.txt" in line for line in lines)
        f.quit()
        # commands pipelined behind AUTH TLS in clear are not obeyed
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.recv(1000)
            c.sendall(b"AUTH TLS\r\nUSER anonymous\r\nPASS x\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                reply += c.recv(1)
            assert reply.startswith(b"234"), reply
            t = ctx.wrap_socket(c, server_hostname="localhost")
            t.sendall(b"PWD\r\n")
            assert t.recv(1000).startswith(b"530")  # not logged in: USER was dropped
            t.close()
        s.wait_log("bytes sent before the TLS handshake dropped")
        # implicit TLS port with a plain client: the handshake fails, logged
        with socket.create_connection(("127.0.0.1", tport), timeout=10) as c:
            c.sendall(b"USER anonymous\r\n")
            c.settimeout(5)
            try:
                while c.recv(1000):
                    pass
            except ConnectionResetError:
                pass
    finally:
        s.stop()


def test_admin_console_over_tls():
    d = temp_dir()
    make_cert(d, "cert", "localhost")
    make_cert(d, "other", "localhost")
    write_secret(os.path.join(d, "admin.secret"), "s3cret-s3cret-s3cret")
    aport = free_port()
    conf = ('admin = { tls_listen = [ "127.0.0.1:%d" ]; secret = "admin.secret";\n'
            '  tls = { certificate = "cert.pem"; key = "cert.key"; }; };\n'
            'echo = ( { name = "echo"; listen = [ "127.0.0.1:%d" ]; } );\n' % (aport, free_port()))
    s = Server(conf, dir=d)
    try:
        def ctl(*args):
            p = subprocess.run([MEDUSACTL, "-a", "localhost:%d" % aport, "-k",
                                os.path.join(d, "admin.secret")] + list(args),
                               capture_output=True, text=True, timeout=30)
            return p.returncode, p.stdout, p.stderr

        rc, out, err = ctl("--cacert", os.path.join(d, "cert.pem"), "stats", "json")
        assert rc == 0, err
        assert json.loads(out)["tls"]["handshakes"] >= 1
        rc, out, err = ctl("--cacert", os.path.join(d, "other.pem"), "stats")
        assert rc == 3 and "TLS" in err, err  # not the server's CA
        rc, out, err = ctl("--cacert", os.path.join(d, "cert.pem"), "--servername", "evil.test",
                           "stats")
        assert rc == 3, err  # not the certificate's name
        rc, out, err = ctl("stats")  # in clear to a TLS console
        assert rc == 3, (out, err)
        s.wait_log("TLS handshake failed")
    finally:
        s.stop()
