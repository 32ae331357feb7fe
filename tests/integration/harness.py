"""Shared helpers for integration tests: start the real medusad on free
ports in a temporary folder, talk to it with real sockets, clean up."""
import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

MEDUSAD = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "build/medusad"


def free_port():
    """A port nothing listens on right now (the kernel's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


class Server:
    """A medusad process with its configuration in a temporary folder."""

    def __init__(self, conf, workers=None, dir=None):
        self.dir = dir or tempfile.mkdtemp(prefix="medusa-it-")
        self.conf = os.path.join(self.dir, "medusa.conf")
        self.log = os.path.join(self.dir, "error.log")
        self.write_conf(conf)
        args = [MEDUSAD, "-c", self.conf]
        if workers:
            args += ["-w", str(workers)]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL)
        atexit.register(self.cleanup)
        self.wait_log("medusad started")

    def write_conf(self, conf):
        text = 'log = { level = "info"; error_log = "error.log"; };\n' + conf
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

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


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


def temp_dir():
    """A folder removed at exit; give it to Server(dir=...) to put files beside the config."""
    d = tempfile.mkdtemp(prefix="medusa-it-")
    atexit.register(shutil.rmtree, d, True)
    return d
