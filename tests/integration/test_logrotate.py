"""The packaged logrotate file (packaging/logrotate), run with logrotate -f
and a test state file against a live server under load: every request made
before and after the rotation is in exactly one of the access logs."""
import gzip
import http.client
import os
import re
import shutil
import subprocess
import threading

import pytest

from harness import Server, free_port, site, temp_dir, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
pytestmark = pytest.mark.skipif(not shutil.which("logrotate") and not os.path.exists("/usr/sbin/logrotate"),
                                reason="logrotate is missing (packaging/bootstrap)")


def test_rotation_loses_and_doubles_nothing():
    tmp = temp_dir()
    logs = os.path.join(tmp, "logs")
    os.makedirs(logs)
    vhost = site(tmp)
    port = free_port()
    s = Server('http = ( { name = "web"; listen = [ "127.0.0.1:%d" ]; access_log = "logs/access.log";\n'
               ' vhosts = ( %s ); } );\n' % (port, vhost), dir=tmp, workers=2)
    # the packaged rules, pointed at this folder and this process (no systemd here)
    rules = open(os.path.join(HERE, "..", "..", "packaging", "logrotate")).read()
    rules = rules.replace("/var/log/medusa/*.log", os.path.join(logs, "*.log"))
    rules = re.sub(r"systemctl kill [^\n]*", "kill -USR1 %d" % s.pid, rules)
    rules = rules.replace("create 0640 medusa adm", "create 0640")
    conf = os.path.join(tmp, "logrotate.conf")
    with open(conf, "w") as f:
        f.write(rules)
    sent = []
    stop = threading.Event()

    def load(k):
        i = 0
        while not stop.is_set():
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            for _ in range(10):
                path = "/?c=%d-%d" % (k, i)
                c.request("GET", path)
                r = c.getresponse()
                r.read()
                assert r.status == 200
                sent.append(path)
                i += 1
            c.close()
    threads = [threading.Thread(target=load, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(sent) > 300, 20, "requests before")
        state = os.path.join(tmp, "logrotate.state")
        out = subprocess.run(["/usr/sbin/logrotate", "-f", "-s", state, conf],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        n = len(sent)
        wait_for(lambda: len(sent) > n + 300, 20, "requests after")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert s.stop() == 0
    lines = []
    for name in sorted(os.listdir(logs)):
        p = os.path.join(logs, name)
        opener = gzip.open if name.endswith(".gz") else open
        with opener(p, "rt") as f:
            lines += [(name, line) for line in f if line.strip()]
    files = {name for name, _ in lines}
    assert "access.log" in files and "access.log.1" in files, files
    logged = [re.search(r'"GET (\S+) ', line).group(1) for _, line in lines]
    assert sorted(logged) == sorted(sent), (len(logged), len(sent))
    assert len(set(logged)) == len(logged)
