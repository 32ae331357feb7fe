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

    def __init__(self, conf, workers=None):
        self.dir = tempfile.mkdtemp(prefix="medusa-it-")
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
        return self.proc.wait(timeout)

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
