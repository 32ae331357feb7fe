"""Users files written by htpasswd (apache2-utils) in every format it has:
bcrypt, apr1 MD5 (its default), {SHA}, DES crypt, sha256crypt and
sha512crypt all log in over HTTP Basic auth and FTP; wrong passwords and
unknown users do not; a password in clear is refused by -t with file:line."""
import ftplib
import os
import shutil
import subprocess

import pytest

from harness import MEDUSAD, Server, curl, free_port, temp_dir

pytestmark = pytest.mark.skipif(not shutil.which("htpasswd"),
                                reason="htpasswd is missing (apache2-utils; packaging/bootstrap)")

FORMATS = {"bcrypt": "-B", "apr1": "-m", "sha1": "-s", "crypt": "-d", "sha256": "-2",
           "sha512": "-5"}


def make_users(path, fmt_flags, extra=""):
    for i, (user, flag) in enumerate(fmt_flags.items()):
        args = ["htpasswd", "-b", flag] + (["-c"] if i == 0 else []) + [path, user, "pw-" + user]
        subprocess.run(args, check=True, capture_output=True)
    if extra:
        with open(path, "a") as f:
            f.write(extra)


def test_every_htpasswd_format_logs_in_over_http_and_ftp():
    tmp = temp_dir()
    users = os.path.join(tmp, "users")
    make_users(users, FORMATS)
    text = open(users).read()
    assert "$apr1$" in text and "{SHA}" in text and "$2y$" in text and "$5$" in text
    os.makedirs(os.path.join(tmp, "www", "private"))
    with open(os.path.join(tmp, "www", "private", "x.txt"), "w") as f:
        f.write("secret\n")
    os.makedirs(os.path.join(tmp, "ftp"))
    with open(os.path.join(tmp, "ftp", "f.txt"), "w") as f:
        f.write("ftp file\n")
    port, fport = free_port(), free_port()
    # every format's wrong password, from one address: not throttled here
    conf = ('login_throttle = { max_failures = 0; };\n'
            'http = ( { name = "web"; listen = [ "127.0.0.1:%d" ]; vhosts = ( { handlers = (\n'
            '  { type = "auth"; path = "/private/"; users = "users"; },\n'
            '  { type = "static"; path = "/"; root = "www"; } ); } ); } );\n'
            'ftp = ( { name = "files"; listen = [ "127.0.0.1:%d" ]; root = "ftp"; users = "users";'
            ' anonymous = false; login_failure_delay = 0; } );\n' % (port, fport))
    s = Server(conf, dir=tmp)
    try:
        url = "http://127.0.0.1:%d/private/x.txt" % port
        for user in FORMATS:
            st, h, body = curl("-u", "%s:pw-%s" % (user, user), url)[:3]
            assert st == 200 and body == b"secret\n", (user, st)
            st = curl("-u", "%s:wrong" % user, url)[0]
            assert st == 401, user
            f = ftplib.FTP()
            f.connect("127.0.0.1", fport, timeout=10)
            f.login(user, "pw-" + user)
            assert f.nlst() == ["f.txt"]
            f.quit()
        assert curl("-u", "nobody:pw-nobody", url)[0] == 401
        # a DES password is cut at 8 characters, as crypt(3) always did
    finally:
        s.stop()


def test_a_password_in_clear_is_refused_with_file_and_line():
    tmp = temp_dir()
    users = os.path.join(tmp, "users")
    make_users(users, {"good": "-B", "clear": "-p"})
    conf = os.path.join(tmp, "medusa.conf")
    with open(conf, "w") as f:
        f.write('http = ( { name = "web"; listen = [ "127.0.0.1:%d" ]; vhosts = ( { handlers = (\n'
                '  { type = "auth"; path = "/"; users = "users"; } ); } ); } );\n' % free_port())
    out = subprocess.run([MEDUSAD, "-t", "-c", conf], capture_output=True, text=True)
    assert out.returncode == 1
    assert "users:2: user 'clear': not a password hash" in out.stderr, out.stderr
    assert "medusa.conf:2:" in out.stderr
