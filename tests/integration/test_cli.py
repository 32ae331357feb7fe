"""medusad's command line: -t, -V, -w, -h and their exit codes."""
import os
import subprocess
import tempfile

from harness import MEDUSAD, ok

d = tempfile.mkdtemp(prefix="medusa-cli-")
bad = os.path.join(d, "bad.conf")
with open(bad, "w") as f:
    f.write('workers = 2;\nchat = ( { name = "c";\n  listen = [ "127.0.0.1:70000" ]; } );\n')
r = subprocess.run([MEDUSAD, "-t", "-c", bad], capture_output=True, text=True)
assert r.returncode == 1, r
assert r.stderr.startswith(bad + ":3: "), r.stderr
ok("-t on a broken file: exit 1 with file:line (%s)" % r.stderr.strip())

good = os.path.join(d, "good.conf")
with open(good, "w") as f:
    f.write('workers = 2;\nchat = ( { name = "c"; listen = [ "127.0.0.1:7000" ]; } );\n')
r = subprocess.run([MEDUSAD, "-t", "-c", good], capture_output=True, text=True)
assert r.returncode == 0 and "configuration ok" in r.stdout, r
ok("-t on a good file: exit 0")

here = os.path.dirname(os.path.abspath(__file__))
default = os.path.join(here, "..", "..", "etc", "medusa.conf")
r = subprocess.run([MEDUSAD, "-t", "-c", default], capture_output=True, text=True)
assert r.returncode == 0, r
ok("the shipped etc/medusa.conf is valid")

r = subprocess.run([MEDUSAD, "-t", "-c", os.path.join(d, "absent.conf")], capture_output=True, text=True)
assert r.returncode == 1 and ":0: cannot read" in r.stderr, r
r = subprocess.run([MEDUSAD, "-V"], capture_output=True, text=True)
assert r.returncode == 0 and r.stdout.startswith("medusad "), r
r = subprocess.run([MEDUSAD, "-w", "0", "-c", good], capture_output=True, text=True)
assert r.returncode == 2 and "-w" in r.stderr, r
r = subprocess.run([MEDUSAD, "-t", "-w", "3", "-c", good], capture_output=True, text=True)
assert r.returncode == 0 and "3 workers" in r.stdout, r
r = subprocess.run([MEDUSAD, "-h"], capture_output=True, text=True)
assert r.returncode == 0 and "usage" in r.stdout, r
r = subprocess.run([MEDUSAD, "-x"], capture_output=True, text=True)
assert r.returncode == 2, r
ok("-V, -w, -h and unknown options")
