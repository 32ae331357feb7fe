#!/usr/bin/python3
"""FTP benchmark: medusad against vsftpd and pyftpdlib, side by side.

Every server is pinned to CPU 0 and the load client (tests/bench/ftp_load.c,
built as build/tests/ftp_load) to CPU 1, so the client has a core of its
own; it reports its CPU time, and the tables show how busy it was. The
server's CPU is what core 0 spent (/proc/stat), whatever its process model. Rounds
are interleaved (each round measures every server in turn) and the figures
are medians; ratios are medusad's over each peer's median.

  RETR and STOR of a SIZE MiB file (MB/s, TRANSFERS of each per round),
      and the server's CPU seconds per GiB moved
  sessions/s: CLIENTS clients each repeating login + LIST + RETR of a 4 KiB
      file + QUIT; medusad twice: passive ports from a range, and bound to
      port 0 for each PASV (the kernel picks)
  KiB per idle logged-in session (PSS of all the server's processes)

Needs vsftpd and python3-pyftpdlib from Debian (apt-get install vsftpd
python3-pyftpdlib; pure-ftpd conflicts with vsftpd in Debian and is left
out). Run as root (vsftpd insists). Not a test: nothing asserts on timing.

usage: ftp_bench.py MEDUSAD [--rounds 5] [--transfers 3] [--size-mib 256]
                            [--clients 100] [--seconds 5] [--idle 500]
"""
import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.5) as s:
                s.recv(100)
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d never opened" % port)


def pss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/smaps_rollup" % pid) as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def tree(pid):
    """pid and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open("/proc/%d/task/%d/children" % (p, p)) as f:
                todo += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


class Server:
    def __init__(self, name, argv, port, root, upload):
        self.name, self.port, self.root, self.upload = name, port, root, upload
        self.proc = subprocess.Popen(["taskset", "-c", "0"] + argv, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_port(port)

    def stop(self):
        try:
            os.killpg(self.proc.pid, 15)
        except ProcessLookupError:
            pass
        self.proc.wait(10)


def pasv_range(i):
    base = 50000 + i * 1000
    return base, base + 999


def start_medusa(binary, root, tmp, i, use_range=True):
    port = free_port()
    lo, hi = pasv_range(i)
    conf = os.path.join(tmp, "medusa-%d.conf" % i)
    with open(conf, "w") as f:
        f.write('workers = 1;\nallow_root = true;\nworker_connections = 20000;\nlog = { level = "warn"; };\n'
                'ftp = ( { name = "bench"; listen = [ "127.0.0.1:%d" ]; root = "%s";\n'
                '  anonymous = true; anonymous_upload = "up"; max_sessions_per_ip = 0;\n'
                '  %s } );\n' % (port, root, "passive_ports = [ %d, %d ];" % (lo, hi)
                                 if use_range else ""))
    name = "medusad" if use_range else "medusad (port 0)"
    return Server(name, [binary, "-c", conf], port, root, "up")


def start_vsftpd(root, tmp, i):
    if not shutil.which("vsftpd"):
        return None
    port = free_port()
    lo, hi = pasv_range(i)
    conf = os.path.join(tmp, "vsftpd.conf")
    os.makedirs("/var/run/vsftpd/empty", exist_ok=True)
    with open(conf, "w") as f:
        # Its best case: no per-session network namespace (isolate*), no
        # logging; uploads into up/, owned by the anonymous user.
        f.write("listen=YES\nlisten_ipv6=NO\nlisten_address=127.0.0.1\nlisten_port=%d\n"
                "background=NO\nanonymous_enable=YES\nanon_root=%s\n"
                "local_enable=NO\nwrite_enable=YES\nanon_upload_enable=YES\nftp_username=ftp\n"
                "pasv_enable=YES\npasv_min_port=%d\npasv_max_port=%d\nmax_clients=0\n"
                "max_per_ip=0\nxferlog_enable=NO\nsyslog_enable=NO\nvsftpd_log_file=/dev/null\n"
                "isolate=NO\nisolate_network=NO\nseccomp_sandbox=NO\n"
                "secure_chroot_dir=/var/run/vsftpd/empty\nuse_sendfile=YES\n"
                % (port, root, lo, hi))
    return Server("vsftpd", ["vsftpd", conf], port, root, "up")


def start_pyftpdlib(root, tmp, i):
    code = r"""
import logging, sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer
logging.basicConfig(level=logging.ERROR)
a = DummyAuthorizer()
a.add_anonymous(sys.argv[1], perm="elradfmw")
FTPHandler.authorizer = a
FTPHandler.passive_ports = range(int(sys.argv[3]), int(sys.argv[4]) + 1)
s = FTPServer(("127.0.0.1", int(sys.argv[2])), FTPHandler)
s.max_cons = 20000
s.serve_forever()
"""
    try:
        subprocess.run(["/usr/bin/python3", "-c", "import pyftpdlib"], check=True,
                       capture_output=True)
    except subprocess.CalledProcessError:
        return None
    port = free_port()
    lo, hi = pasv_range(i)
    return Server("pyftpdlib", ["/usr/bin/python3", "-c", code, root, str(port), str(lo), str(hi)],
                  port, root, "up")


def load(binary, *args):
    p = subprocess.run(["taskset", "-c", "1", binary] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError("ftp_load %s: %s" % (" ".join(map(str, args)), p.stderr.strip()))
    if p.stderr.strip():
        print("   (%s)" % p.stderr.strip().replace("\n", "; "), flush=True)
    words = p.stdout.split()
    return {words[i]: float(words[i + 1]) for i in range(0, len(words), 2)}


def core_busy(core=0):
    """Seconds core has spent busy (user, system, interrupts) since boot.
    The servers run alone on core 0, so this is their CPU, whatever their
    process model: vsftpd's session processes are reaped without their
    CPU time reaching the listener's."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu%d " % core):
                v = [int(x) for x in line.split()[1:]]
                return (sum(v[:3]) + sum(v[5:8])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def measured(srv, loader, *args):
    """One load run, with the CPU its server's core spent on it. sync
    first, so no transfer starts with another's dirty pages waiting."""
    os.sync()
    cpu0 = core_busy()
    r = load(loader, *args)
    return r, core_busy() - cpu0


def idle_sessions(srv, n):
    """KiB of PSS per idle logged-in session."""
    pids = lambda: tree(srv.proc.pid)  # noqa: E731
    before = pss_kib(pids())
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", srv.port), 10)
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"USER anonymous\r\n")
        f.readline()
        s.sendall(b"PASS idle@example.com\r\n")
        line = f.readline()
        while line[3:4] == b"-":
            line = f.readline()
        if not line.startswith(b"230"):
            raise RuntimeError("%s: login %r" % (srv.name, line))
        socks.append((s, f))
    time.sleep(1)
    after = pss_kib(pids())
    for s, f in socks:
        f.close()
        s.close()
    return (after - before) / n


def table(title, unit, names, data, higher_better=True):
    print("\n%s (%s, median)" % (title, unit))
    med = {k: statistics.median(v) for k, v in data.items() if v}
    peers = [n for n in names if not n.startswith("medusad") and n in med]
    print("%-18s %12s  %s" % ("server", unit, "  ".join("vs %-10s" % p for p in peers)))
    for n in names:
        if n not in med:
            continue
        ratios = []
        for p in peers:
            if not med[n] or not med[p]:
                ratios.append("%-12s" % "-")
                continue
            r = med[n] / med[p] if higher_better else med[p] / med[n]
            ratios.append("%-12s" % ("%.2fx" % r if n.startswith("medusad") else ""))
        print("%-18s %12s  %s" % (n, ("%.2f" if med[n] < 10 else "%.1f") % med[n], "  ".join(ratios)))
    return med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("medusad")
    ap.add_argument("--load", default=None, help="ftp_load binary (default: beside medusad)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--transfers", type=int, default=3, help="RETRs and STORs per server per round")
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--idle", type=int, default=500)
    args = ap.parse_args()
    medusad = os.path.abspath(args.medusad)
    loader = args.load or os.path.join(os.path.dirname(medusad), "tests", "ftp_load")
    if not os.path.exists(loader):
        sys.exit("no %s: build the tree first (cmake --build build)" % loader)

    tmp = tempfile.mkdtemp(prefix="medusa-ftpbench-")
    os.chmod(tmp, 0o755)
    root = os.path.join(tmp, "root")
    os.makedirs(os.path.join(root, "up"))
    shutil.chown(os.path.join(root, "up"), "ftp", "ftp")
    chunk = os.urandom(1 << 20)
    big = os.path.join(tmp, "big.bin")
    with open(big, "wb") as f:
        for _ in range(args.size_mib):
            f.write(chunk)
    os.link(big, os.path.join(root, "big.bin"))
    with open(os.path.join(root, "small.bin"), "wb") as f:
        f.write(os.urandom(4096))
    for i in range(10):
        with open(os.path.join(root, "file%d.txt" % i), "w") as f:
            f.write("x" * (i * 100))

    servers = [start_medusa(medusad, root, tmp, 0), start_medusa(medusad, root, tmp, 1, False)]
    for s in (start_vsftpd(root, tmp, 2), start_pyftpdlib(root, tmp, 3)):
        if s:
            servers.append(s)
    names = [s.name for s in servers]
    # Memory first, while every server is fresh: after the load runs,
    # freed memory that a process keeps would hide what a session costs.
    idle = {s.name: [idle_sessions(s, args.idle)] for s in servers}
    retr = {n: [] for n in names}
    stor = {n: [] for n in names}
    retr_cpu = {n: [] for n in names}
    stor_cpu = {n: [] for n in names}
    sess = {n: [] for n in names}
    client_busy = {n: [] for n in names}
    server_busy = {n: [] for n in names}
    try:
        for rnd in range(args.rounds):
            # Each round in another order, so no server always follows the
            # same one; transfers alternate server by server, so a burst of
            # noise from the shared machine is spread over all of them.
            order = servers[rnd % len(servers):] + servers[:rnd % len(servers)]
            for k in range(args.transfers):
                for s in order:
                    r, cpu = measured(s, loader, "retr", "127.0.0.1", s.port, "big.bin")
                    retr[s.name].append(r["bytes"] / r["seconds"] / 1e6)
                    retr_cpu[s.name].append(cpu / (r["bytes"] / 2**30))
                for s in order:
                    remote = "up/stor-%d-%d-%d.bin" % (servers.index(s), rnd, k)
                    r, cpu = measured(s, loader, "stor", "127.0.0.1", s.port, big, remote)
                    stor[s.name].append(r["bytes"] / r["seconds"] / 1e6)
                    stor_cpu[s.name].append(cpu / (r["bytes"] / 2**30))
                    os.unlink(os.path.join(root, remote))
            for s in order:
                r, cpu = measured(s, loader, "sessions", "127.0.0.1", s.port, args.clients,
                                  args.seconds, "small.bin")
                server_busy[s.name].append(100 * cpu / r["seconds"])
                sess[s.name].append(r["sessions"] / r["seconds"])
                client_busy[s.name].append(100 * r["cpu"] / r["seconds"])
                print("round %d %-18s RETR %7.1f MB/s  STOR %7.1f MB/s  %7.1f sessions/s "
                      "(%d errors, CPU: client %.0f%%, server %.0f%%)"
                      % (rnd + 1, s.name, retr[s.name][-1], stor[s.name][-1], sess[s.name][-1],
                         r["errors"], client_busy[s.name][-1], server_busy[s.name][-1]),
                      flush=True)
                time.sleep(1)  # let TIME_WAIT settle a little
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, True)

    table("RETR %d MiB" % args.size_mib, "MB/s", names, retr)
    table("RETR, server CPU", "s per GiB", names, retr_cpu, higher_better=False)
    table("STOR %d MiB" % args.size_mib, "MB/s", names, stor)
    table("STOR, server CPU", "s per GiB", names, stor_cpu, higher_better=False)
    table("%d clients: login + LIST + RETR 4 KiB + QUIT" % args.clients, "sessions/s", names, sess)
    print("   CPU, each of its own core: " +
          ", ".join("%s: client %.0f%%, server %.0f%%" % (n, statistics.median(client_busy[n]),
                                                          statistics.median(server_busy[n]))
                    for n in names))
    table("%d idle logged-in sessions" % args.idle, "KiB/session", names, idle,
          higher_better=False)


if __name__ == "__main__":
    main()
