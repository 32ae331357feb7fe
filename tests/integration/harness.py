"""Shared helpers for integration tests: start the real medusad on free
ports in a temporary folder, talk to it with real sockets and medusactl,
clean up. conftest.py says which medusad (MEDUSAD in the environment)."""
import atexit
import ftplib
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

MEDUSAD = os.environ.get("MEDUSAD") or os.path.abspath("build/medusad")
MEDUSACTL = os.path.join(os.path.dirname(MEDUSAD), "medusactl")


def free_port():
    """A port nothing listens on right now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ReusingFTP_TLS(ftplib.FTP_TLS):
    """ftplib's FTP_TLS whose data connections resume the control
    connection's TLS session, as curl and lftp do (and medusa, like vsftpd,
    requires by default)."""

    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host,
                                            session=self.sock.session)
        return conn, size


def free_ports(n):
    """n different free ports: each socket is held until all are chosen."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_for(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


class Server:
    """A medusad process with its configuration in a temporary folder.
    admin=True adds a Unix console (self.sock) that ctl() talks to."""

    def __init__(self, conf, workers=None, dir=None, admin=False, level="info"):
        self.dir = dir or tempfile.mkdtemp(prefix="medusa-it-")
        self.conf = os.path.join(self.dir, "medusa.conf")
        self.log = os.path.join(self.dir, "error.log")
        self.sock = os.path.join(self.dir, "run", "admin.sock") if admin else None
        self.level = level
        self.write_conf(conf)
        args = [MEDUSAD, "-c", self.conf]
        if workers:
            args += ["-w", str(workers)]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        atexit.register(self.cleanup)
        self.wait_log("medusad started")

    @property
    def pid(self):
        return self.proc.pid

    def write_conf(self, conf):
        # CI runs as root, and the tests serve without a user of their own
        text = 'allow_root = true;\nlog = { level = "%s"; error_log = "error.log"; };\n' % self.level
        if self.sock:
            text += 'admin = { listen = [ "unix:run/admin.sock" ]; };\n'
        text += conf
        with open(self.conf, "w") as f:
            f.write(text)

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_log(self, text, timeout=10.0, count=1):
        def seen():
            if self.proc.poll() is not None:
                raise AssertionError("medusad exited (%s); log:\n%s" % (self.proc.returncode, self.log_text()))
            return self.log_text().count(text) >= count
        wait_for(seen, timeout, "log line %r" % text)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def reload(self, conf):
        n = self.log_text().count("reloading ")
        self.write_conf(conf)
        self.signal(signal.SIGHUP)
        wait_for(lambda: self.log_text().count("reloading ") > n and
                 ("configuration reloaded" in self.log_text().split("reloading ")[-1] or
                  "reload failed" in self.log_text().split("reloading ")[-1]),
                 10, "reload outcome")
        return self.log_text().split("reloading ")[-1]

    def stop(self, timeout=20):
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.dump_threads()
            raise

    def dump_threads(self):
        """Every thread's stack of a server that does not stop, for the log."""
        if shutil.which("gdb"):
            out = subprocess.run(["gdb", "-batch", "-p", str(self.proc.pid), "-ex",
                                  "thread apply all bt"], capture_output=True, text=True,
                                 timeout=60)
            print(out.stdout[-20000:], file=sys.stderr)
        print(self.log_text()[-5000:], file=sys.stderr)

    def ctl(self, *args):
        """A console command through medusactl; its output (exit 0 asserted)."""
        rc, out, err = ctl("-s", self.sock, *args)
        assert rc == 0, (args, out, err)
        return out

    def ctl_json(self, *args):
        return json.loads(self.ctl(*args, "json"))

    def running_workers(self):
        return sorted(w["id"] for w in self.ctl_json("workers") if w["state"] == "running")

    def wait_workers_settled(self, timeout=20):
        """Until no worker is draining (they have moved or finished everything)."""
        wait_for(lambda: all(w["state"] != "draining" for w in self.ctl_json("workers")),
                 timeout, "draining workers to leave")

    def fds(self):
        """Open descriptors of the process."""
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def settled_fds(self, quiet=1.0):
        """The descriptor count once it has not changed for `quiet` seconds
        (workers finish starting after "medusad started" is logged)."""
        last, since = self.fds(), time.monotonic()
        while time.monotonic() - since < quiet:
            time.sleep(0.05)
            now = self.fds()
            if now != last:
                last, since = now, time.monotonic()
        return last

    def fd_kinds(self):
        """How many descriptors of each kind: listening, connected or Unix
        sockets (by /proc/net), pipes, eventfds, epoll sets, files."""
        states = {}
        for name in ("tcp", "tcp6"):
            try:
                with open("/proc/net/" + name) as f:
                    next(f)
                    for line in f:
                        parts = line.split()
                        states[parts[9]] = "tcp-listen" if parts[3] == "0A" else "tcp"
            except FileNotFoundError:
                pass
        kinds = {}
        for t in self.fd_targets().values():
            if t.startswith("socket:["):
                k = states.get(t[8:-1], "unix")
            elif t.startswith("anon_inode:"):
                k = t[len("anon_inode:"):].strip("[]")
            else:
                k = t.split(":")[0] if ":" in t else "file"
            kinds[k] = kinds.get(k, 0) + 1
        return kinds

    def fd_targets(self):
        """What each open descriptor is (socket:[inode], anon_inode:[eventfd], a path)."""
        out = {}
        for fd in os.listdir("/proc/%d/fd" % self.pid):
            try:
                out[int(fd)] = os.readlink("/proc/%d/fd/%s" % (self.pid, fd))
            except OSError:
                pass
        return out

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        keep_logs(self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)


def keep_logs(folder):
    """Under ctest (MEDUSA_TEST_LOGS), every log a server wrote is kept for
    tests/security/log_secrets.py, which reads them all for the suite's
    passwords and secrets once every integration test has run."""
    dest = os.environ.get("MEDUSA_TEST_LOGS")
    if not dest:
        return
    os.makedirs(dest, exist_ok=True)
    for d, _, files in os.walk(folder):
        for name in files:
            if name.endswith((".log", ".err")) or name == "xferlog":
                target = os.path.join(dest, "%d-%s-%s" % (os.getpid(), os.path.basename(d), name))
                n = 0
                while os.path.exists(target + (".%d" % n if n else "")):
                    n += 1
                try:
                    shutil.copyfile(os.path.join(d, name), target + (".%d" % n if n else ""))
                except OSError:
                    pass


def ctl(*args, stdin=None):
    """Runs medusactl; returns (exit status, stdout, stderr)."""
    p = subprocess.run([MEDUSACTL] + list(args), input=stdin, capture_output=True, text=True,
                       timeout=30)
    return p.returncode, p.stdout, p.stderr


class Admin:
    """A raw console session: sends lines, reads STATUS LENGTH frames."""

    def __init__(self, addr, timeout=10.0):
        fam = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(addr)
        self.buf = b""

    def frame(self):
        while b"\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise EOFError("closed")
            self.buf += d
        head, _, self.buf = self.buf.partition(b"\n")
        status, length = head.split()
        length = int(length)
        while len(self.buf) < length:
            d = self.sock.recv(65536)
            if not d:
                raise EOFError("closed mid-frame")
            self.buf += d
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(status), body.decode(errors="replace")

    def cmd(self, line):
        self.sock.sendall(line.encode() + b"\n")
        return self.frame()

    def auth(self, secret):
        st, challenge = self.frame()
        assert st == 401 and len(challenge) == 64, (st, challenge)
        answer = hmac.new(secret.encode(), challenge.encode(), hashlib.sha256).hexdigest()
        return self.cmd("auth " + answer), challenge, answer

    def closed(self, timeout=5):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except (socket.timeout, ConnectionResetError):
            return False

    def close(self):
        self.sock.close()


def write_secret(path, text, mode=0o600):
    with open(path, "w") as f:
        f.write(text + "\n")
    os.chmod(path, mode)


def listening_sockets(port):
    """LISTEN sockets on a TCP port in this network namespace, as the kernel
    counts them (/proc/net/tcp and tcp6)."""
    n = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    local, state = line.split()[1], line.split()[3]
                    if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        n += 1
        except FileNotFoundError:
            pass
    return n


def site(tmp, text="hello\n"):
    """A www folder with index.html under tmp, and a vhost serving it."""
    os.makedirs(os.path.join(tmp, "www"), exist_ok=True)
    with open(os.path.join(tmp, "www", "index.html"), "w") as f:
        f.write(text)
    return '{ names = [ "*" ]; handlers = ( { type = "static"; path = "/"; root = "www"; } ); }'


def chat_conf(name="chat", listen=(), extra=""):
    items = ", ".join('"%s"' % a for a in listen)
    return 'chat = ( { name = "%s"; listen = [ %s ]; %s } );\n' % (name, items, extra)


class ChatClient:
    def __init__(self, addr, timeout=10.0, rcvbuf=None):
        if isinstance(addr, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:  # before connect, so the advertised window stays small
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(addr)
        self.buf = b""
        self.nick = None

    def read_until(self, token, timeout=10.0):
        deadline = time.monotonic() + timeout
        while token not in self.buf:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError("connection closed before %r; got %r" % (token, self.buf))
            self.buf += data
        i = self.buf.index(token) + len(token)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def line(self, timeout=10.0):
        return self.read_until(b"\r\n", timeout)[:-2].decode(errors="replace")

    def send_line(self, text):
        self.sock.sendall(text.encode() + b"\r\n")

    def join(self, nick):
        self.read_until(b"nickname?: ")
        self.send_line(nick)
        welcome = self.line()
        assert welcome.startswith("* welcome, " + nick), welcome
        self.nick = nick
        return welcome

    def read_eof(self, timeout=10.0):
        """Everything until the server closes; raises if it does not."""
        deadline = time.monotonic() + timeout
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                out, self.buf = self.buf, b""
                return out
            self.buf += data

    def close(self):
        self.sock.close()


def ok(msg):
    print("ok -", msg, flush=True)


# ---- HTTP ----

def http_conf(port, vhosts, extra="", name="web"):
    """An http service on 127.0.0.1:port; vhosts is libconfig text."""
    return ('http = ( { name = "%s"; listen = [ "127.0.0.1:%d" ]; %s\n vhosts = ( %s ); } );\n'
            % (name, port, extra, vhosts))


def curl(*args, check=True):
    """Runs curl -s; returns (status, headers dict (lower-case), body bytes)."""
    import subprocess as sp
    out = sp.run(["curl", "-s", "-S", "-D", "-", "--max-time", "20"] + list(args),
                 capture_output=True)
    if check and out.returncode != 0:
        raise AssertionError("curl %s failed: %s" % (args, out.stderr.decode(errors="replace")))
    data = out.stdout
    # skip interim 1xx blocks
    status, headers = 0, {}
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else 0
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        data = rest
        if not (100 <= status < 200):
            break
    return status, headers, data, out.stderr.decode(errors="replace")


class Response:
    def __init__(self, status, reason, headers, body, version):
        self.status, self.reason, self.headers, self.body, self.version = \
            status, reason, headers, body, version

    def header(self, name):
        return self.headers.get(name.lower())


class RawHTTP:
    """A raw socket that reads responses one by one (Content-Length bodies)."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("closed by server")
        self.buf += data

    def response(self, head_only=False):
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = 0 if head_only else int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return Response(int(status), reason, headers, body, version)

    def closed(self, timeout=5.0):
        """True when the server closes (after any pending bytes)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


_SANITIZED = None


def sanitized():
    """True for an ASan or TSan build of medusad: slower, and its memory
    figures include the sanitizer's own (shadow memory, quarantine)."""
    global _SANITIZED
    if _SANITIZED is None:
        with open(MEDUSAD, "rb") as f:
            data = f.read()
        # (a sanitizer linked dynamically leaves only its symbols' names)
        _SANITIZED = any(w in data for w in (b"AddressSanitizer", b"ThreadSanitizer",
                                             b"__asan_init", b"__tsan_init"))
    return _SANITIZED


def temp_dir():
    """A folder removed at exit; give it to Server(dir=...) to put files beside the config."""
    d = tempfile.mkdtemp(prefix="medusa-it-")
    atexit.register(shutil.rmtree, d, True)
    return d
