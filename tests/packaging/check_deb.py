#!/usr/bin/python3
"""Builds the .deb (packaging/build-deb) and checks it: file list, conffiles,
Depends, maintainer scripts, lintian (no errors), the unit's systemd-analyze
security score (<= 2.0); then runs the packaged medusad on the packaged
configuration (ports and paths rewritten into a temporary folder) and talks
to it with the packaged medusactl; as root, installs it for real and purges
it, checking what the maintainer scripts create and remove.

    /usr/bin/python3 tests/packaging/check_deb.py
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
WANT = ["./usr/sbin/medusad", "./usr/bin/medusactl", "./etc/medusa/medusa.conf",
        "./etc/logrotate.d/medusa", "./lib/systemd/system/medusa.service",
        "./usr/lib/sysctl.d/50-medusa.conf", "./usr/share/man/man8/medusad.8.gz",
        "./usr/share/man/man1/medusactl.1.gz", "./usr/share/man/man5/medusa.conf.5.gz",
        "./usr/share/doc/medusa/copyright", "./usr/share/doc/medusa/changelog.Debian.gz",
        "./usr/share/doc/medusa/README.md", "./usr/share/medusa/www/index.html"]


def run(*args, **kw):
    return subprocess.run(list(args), capture_output=True, text=True, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ok(what):
    print("ok -", what, flush=True)


def main():
    tmp = tempfile.mkdtemp(prefix="medusa-deb-check-")
    try:
        out = run(os.path.join(SRC, "packaging", "build-deb"), tmp, check=True).stdout.strip()
        deb = out.splitlines()[-1]
        assert re.search(r"/medusa_[0-9.]+-[0-9]+_[a-z0-9]+\.deb$", deb), deb
        ok("built " + os.path.basename(deb))
        files = [line.split()[-1] for line in run("dpkg-deb", "-c", deb, check=True).stdout.splitlines()]
        missing = [f for f in WANT if f not in files]
        assert not missing, missing
        ok("file list")
        info = run("dpkg-deb", "-I", deb, check=True).stdout
        for script in ("postinst", "prerm", "postrm", "conffiles"):
            assert script in info, script
        ctl = tempfile.mkdtemp(dir=tmp)
        run("dpkg-deb", "-e", deb, ctl, check=True)
        assert open(os.path.join(ctl, "conffiles")).read().split() == [
            "/etc/medusa/medusa.conf", "/etc/logrotate.d/medusa"]
        depends = run("dpkg-deb", "-f", deb, "Depends", check=True).stdout
        for lib in ("libevent-core", "libevent-extra", "libconfig", "libssl3", "libsystemd0",
                    "libc6", "adduser"):
            assert lib in depends, (lib, depends)
        ok("conffiles, Depends (from dpkg-shlibdeps): " + depends.strip())
        if shutil.which("lintian"):
            lint = run("lintian", deb)
            errors = [line for line in lint.stdout.splitlines() if line.startswith("E:")]
            assert not errors, lint.stdout
            ok("lintian: no errors; %s" % ("; ".join(lint.stdout.split("\n")).strip() or "clean"))
        root = os.path.join(tmp, "root")
        run("dpkg-deb", "-x", deb, root, check=True)
        sec = run("systemd-analyze", "security", "--offline=true",
                  os.path.join(root, "lib/systemd/system/medusa.service"))
        m = re.search(r"Overall exposure level for medusa.service: ([0-9.]+)", sec.stdout)
        assert m and float(m.group(1)) <= 2.0, sec.stdout[-2000:]
        ok("systemd-analyze security: %s" % m.group(1))
        run_packaged(root, tmp)
        if os.geteuid() == 0 and shutil.which("dpkg") and not installed():
            install_and_purge(deb)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_packaged(root, tmp):
    """The packaged medusad on the packaged configuration, its ports, logs,
    runtime folder and site moved into tmp."""
    port = free_port()
    conf = open(os.path.join(root, "etc/medusa/medusa.conf")).read()
    conf = conf.replace('"0.0.0.0:80", "[::]:80"', '"127.0.0.1:%d"' % port)
    conf = conf.replace("/var/log/medusa", tmp).replace("/run/medusa", tmp)
    conf = conf.replace("/usr/share/medusa/www", os.path.join(root, "usr/share/medusa/www"))
    # no such user here; CI is root
    conf = re.sub(r'^user = "medusa";.*$', "allow_root = true;", conf, flags=re.M)
    path = os.path.join(tmp, "medusa.conf")
    with open(path, "w") as f:
        f.write(conf)
    medusad = os.path.join(root, "usr/sbin/medusad")
    t = run(medusad, "-t", "-c", path)
    assert t.returncode == 0, t.stderr
    p = subprocess.Popen([medusad, "-c", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = "http://127.0.0.1:%d/" % port
        for _ in range(100):
            try:
                body = urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                time.sleep(0.05)
        assert body == open(os.path.join(root, "usr/share/medusa/www/index.html"), "rb").read()
        info = run(os.path.join(root, "usr/bin/medusactl"), "-s", os.path.join(tmp, "admin.sock"),
                   "info")
        assert info.returncode == 0 and "workers" in info.stdout, info
        ok("the packaged medusad serves the packaged site; medusactl talks to it")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(20)


def installed():
    return run("dpkg-query", "-W", "-f=${Status}", "medusa").stdout.startswith("install ok")


def install_and_purge(deb):
    """The maintainer scripts, for real (no systemd running here: they must
    do nothing harmful about the service)."""
    try:
        r = run("dpkg", "-i", deb)
        assert r.returncode == 0, r.stdout + r.stderr
        assert run("getent", "passwd", "medusa").returncode == 0
        for d in ("/var/log/medusa", "/var/lib/medusa"):
            st = os.stat(d)
            assert st.st_mode & 0o777 == 0o750, d
        t = run("/usr/sbin/medusad", "-t", "-c", "/etc/medusa/medusa.conf")
        assert t.returncode == 0 or "cannot bind" in t.stderr, t.stderr
        v = run("systemd-analyze", "verify", "/lib/systemd/system/medusa.service")
        bad = [line for line in (v.stdout + v.stderr).splitlines()
               if line.strip() and "Command 'man " not in line]
        assert not bad, bad
        ok("installed: user medusa, /var/log/medusa and /var/lib/medusa made; unit verifies")
    finally:
        r = run("dpkg", "--purge", "medusa")
        assert r.returncode == 0, r.stdout + r.stderr
    assert run("getent", "passwd", "medusa").returncode != 0
    for gone in ("/var/log/medusa", "/var/lib/medusa", "/etc/medusa", "/usr/sbin/medusad"):
        assert not os.path.exists(gone), gone
    ok("purged: user, folders and files gone")


if __name__ == "__main__":
    main()
    sys.exit(0)
