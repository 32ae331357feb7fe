"""What medusad tells systemd, read from a real datagram socket given as
NOTIFY_SOCKET: READY=1 once the workers serve, STATUS= with workers and open
connections kept current, RELOADING=1 with MONOTONIC_USEC then READY=1
around a reload, STOPPING=1, and WATCHDOG=1 only while every worker's loop
answers (a worker stalled through the test hook stops it)."""
import os
import socket
import threading
import time

from harness import ChatClient, Server, chat_conf, free_port, temp_dir, wait_for


class Notify:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.msgs = []  # (monotonic time, text)
        self.lock = threading.Lock()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            with self.lock:
                self.msgs.append((time.monotonic(), data.decode()))

    def texts(self):
        with self.lock:
            return [t for _, t in self.msgs]

    def times(self, key):
        with self.lock:
            return [when for when, t in self.msgs if key in t.split("\n")]

    def close(self):
        self.sock.close()


def test_ready_status_reload_watchdog_and_stop():
    tmp = temp_dir()
    path = os.path.join(tmp, "notify.sock")
    notify = Notify(path)
    port = free_port()
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "600000", "MEDUSA_TEST_HOOKS": "1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        s = Server(chat_conf(listen=["127.0.0.1:%d" % port]), dir=tmp, workers=2, admin=True)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        wait_for(lambda: any("READY=1" in t for t in notify.texts()), 10, "READY=1")
        wait_for(lambda: any(t.startswith("STATUS=running: 2 workers, 0 open") for t in notify.texts()),
                 10, "STATUS")
        # open connections show up in STATUS
        c = ChatClient(("127.0.0.1", port))
        c.join("alice")
        wait_for(lambda: any("2 workers, 1 open connection" in t for t in notify.texts()), 10,
                 "STATUS with a connection")
        # the watchdog is fed every 200 ms while the loops answer
        wait_for(lambda: len(notify.times("WATCHDOG=1")) >= 5, 10, "WATCHDOG=1")
        # one stalled worker stops it, and it comes back after
        s.ctl("debug", "stall", "2", "1500")
        t0 = time.monotonic()
        time.sleep(2.0)
        fed = [t for t in notify.times("WATCHDOG=1") if t0 + 0.5 < t < t0 + 1.4]
        assert not fed, "watchdog fed while a worker was stalled"
        wait_for(lambda: any(t > t0 + 1.5 for t in notify.times("WATCHDOG=1")), 10,
                 "the watchdog fed again")
        assert "has not answered" in s.log_text()
        # reload: RELOADING=1 with MONOTONIC_USEC, then READY=1
        n = len(notify.texts())
        s.reload(chat_conf(listen=["127.0.0.1:%d" % port]))
        wait_for(lambda: any("RELOADING=1" in t and "MONOTONIC_USEC=" in t
                             for t in notify.texts()[n:]), 10, "RELOADING=1")
        wait_for(lambda: any("READY=1" in t for t in notify.texts()[n + 1:]), 10, "READY=1 again")
        c.close()
    finally:
        assert s.stop() == 0
        wait_for(lambda: any("STOPPING=1" in t for t in notify.texts()), 5, "STOPPING=1")
        notify.close()
