"""medusad's command line: -t, -V, -w, -h and their exit codes."""
import os
import subprocess

from harness import MEDUSAD, temp_dir

HERE = os.path.dirname(os.path.abspath(__file__))


def run(*args):
    return subprocess.run([MEDUSAD] + list(args), capture_output=True, text=True)


def write(name, text):
    path = os.path.join(temp_dir(), name)
    with open(path, "w") as f:
        f.write(text)
    return path


GOOD = 'workers = 2;\nchat = ( { name = "c"; listen = [ "127.0.0.1:7000" ]; } );\n'


def test_check_broken_file_says_file_and_line():
    bad = write("bad.conf", 'workers = 2;\nchat = ( { name = "c";\n  listen = [ "127.0.0.1:70000" ]; } );\n')
    r = run("-t", "-c", bad)
    assert r.returncode == 1, r
    assert r.stderr.startswith(bad + ":3: "), r.stderr


def test_check_good_file():
    r = run("-t", "-c", write("good.conf", GOOD))
    assert r.returncode == 0 and "configuration ok" in r.stdout, r


def test_shipped_configuration_is_valid():
    r = run("-t", "-c", os.path.join(HERE, "..", "..", "etc", "medusa.conf"))
    assert r.returncode == 0, r


def test_missing_file():
    r = run("-t", "-c", os.path.join(temp_dir(), "absent.conf"))
    assert r.returncode == 1 and ":0: cannot read" in r.stderr, r


def test_version_workers_help_and_unknown_options():
    good = write("good.conf", GOOD)
    r = run("-V")
    assert r.returncode == 0 and r.stdout.startswith("medusad "), r
    r = run("-w", "0", "-c", good)
    assert r.returncode == 2 and "-w" in r.stderr, r
    r = run("-t", "-w", "3", "-c", good)
    assert r.returncode == 0 and "3 workers" in r.stdout, r
    r = run("-h")
    assert r.returncode == 0 and "usage" in r.stdout, r
    r = run("--help")
    assert r.returncode == 0 and "usage" in r.stdout and "--config" in r.stdout, r
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("medusad "), r
    r = run("--test", "--workers", "2", "--config", good)
    assert r.returncode == 0 and "2 workers" in r.stdout, r
    assert run("-x").returncode == 2
    assert run("--bogus").returncode == 2
    ctl = os.path.join(os.path.dirname(MEDUSAD), "medusactl")
    r = subprocess.run([ctl, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage: medusactl" in r.stdout and "--socket" in r.stdout, r
    assert subprocess.run([ctl, "--bogus"], capture_output=True).returncode == 2


def test_syntax_errors_show_the_line_and_hint():
    r = run("-t", "-c", write("nginx.conf", "workers 4;\n"))
    assert r.returncode == 1
    assert ":1: syntax error near '4'" in r.stderr and "workers 4;" in r.stderr, r.stderr
    assert "write workers = 4;" in r.stderr
    r = run("-t", "-c", write("open.conf", 'workers = 2;\nlog = { level = "info";\n'))
    assert r.returncode == 1 and "at the end of the file" in r.stderr and "not closed" in r.stderr
    r = run("-t", "-c", write("value.conf", "workers = 2;\nlog = { level = ; };\n"))
    assert r.returncode == 1 and ":2: syntax error in this line:" in r.stderr
    assert "log = { level = ; };" in r.stderr


def test_check_reports_addresses_that_cannot_be_bound():
    import socket
    busy = socket.socket()  # another program, without SO_REUSEPORT
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    conf = write("busy.conf", 'workers = 1;\nchat = ( { name = "c";\n  listen = [ "127.0.0.1:%d" ]; } );\n'
                 'echo = ( { name = "e"; listen = [ "192.0.2.7:7007" ]; } );\n' % port)
    r = run("-t", "-c", conf)
    busy.close()
    assert r.returncode == 1, r  # the address this host lacks
    assert "busy.conf:3: warning: listen 127.0.0.1:%d: cannot bind" % port in r.stderr, r.stderr
    assert "another program" in r.stderr
    assert "busy.conf:4: listen 192.0.2.7:7007: cannot bind" in r.stderr
    assert "not an address of this host" in r.stderr
    # in use only: said, but not fatal (it may be this server as another user)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    conf = write("busy2.conf", 'chat = ( { name = "c"; listen = [ "127.0.0.1:%d" ]; } );\n' % port)
    r = run("-t", "-c", conf)
    busy.close()
    assert r.returncode == 0 and "warning: listen" in r.stderr, r
