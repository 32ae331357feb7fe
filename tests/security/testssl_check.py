#!/usr/bin/python3
"""testssl.sh against medusad's HTTPS listener, with the default TLS
settings, for an ECDSA and an RSA certificate made here.

    tests/security/testssl_check.py build/medusad [--keep-output DIR]

Passes when testssl.sh (Debian's testssl.sh, the `testssl` command) finds:
  - nothing VULNERABLE;
  - no protocol below TLS 1.2 offered (SSLv2, SSLv3, TLS 1, TLS 1.1);
  - forward secrecy for every cipher the server accepts (its key exchange
    is ECDH or DH, never RSA);
  - no NULL, export, LOW, 3DES or RC4 cipher, and no obsolete CBC one.
The certificate itself is self-signed (a test's), so what testssl.sh says
about its chain of trust and revocation is not judged.
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(medusad, kind, outdir):
    tmp = tempfile.mkdtemp(prefix="medusa-testssl-")
    try:
        cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        alg = (["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ecdsa"
               else ["-newkey", "rsa:2048"])
        subprocess.run(["openssl", "req", "-x509", "-nodes", "-days", "30", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key,
                        "-out", cert] + alg, check=True, capture_output=True)
        os.chmod(key, 0o600)
        os.makedirs(os.path.join(tmp, "www"))
        with open(os.path.join(tmp, "www", "index.html"), "w") as f:
            f.write("hello\n")
        port = free_port()
        conf = os.path.join(tmp, "medusa.conf")
        with open(conf, "w") as f:
            f.write('allow_root = true;\nlog = { level = "warn"; error_log = "error.log"; };\n'
                    'http = ( { name = "web"; tls_listen = [ "127.0.0.1:%d" ];\n'
                    '  tls = { certificate = "cert.pem"; key = "key.pem"; };\n'
                    '  vhosts = ( { names = [ "*" ]; handlers = ( { type = "static"; path = "/";'
                    ' root = "www"; } ); } ); } );\n' % port)
        srv = subprocess.Popen([medusad, "-c", conf, "-w", "2"], stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or srv.poll() is not None:
                        raise SystemExit("medusad did not start")
                    time.sleep(0.05)
            out = subprocess.run(["testssl", "--quiet", "--color", "0", "--warnings", "off",
                                  "https://127.0.0.1:%d/" % port],
                                 capture_output=True, text=True, timeout=900).stdout
        finally:
            srv.send_signal(signal.SIGTERM)
            srv.wait(30)
        if outdir:
            with open(os.path.join(outdir, "testssl-%s.txt" % kind), "w") as f:
                f.write(out)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def judge(out, kind):
    problems = []
    for line in out.splitlines():
        if "VULNERABLE" in line:
            problems.append("vulnerable: " + line.strip())
    for proto in ("SSLv2", "SSLv3", "TLS 1 ", "TLS 1.1"):
        m = re.search(r"^ %s\s+(.*)$" % re.escape(proto), out, re.M)
        if not m or not m.group(1).startswith("not offered"):
            problems.append("%s: %s" % (proto.strip(), m.group(1) if m else "not reported"))
    for cat in ("NULL ciphers", "Anonymous NULL", "Export ciphers", "LOW: 64 Bit",
                "Triple DES", "Obsolete CBC"):
        m = re.search(r"^ %s.*?\s{2,}(\S.*)$" % re.escape(cat), out, re.M)
        if not m or not m.group(1).startswith("not offered"):
            problems.append("%s: %s" % (cat, m.group(1) if m else "not reported"))
    # the cipher table: " xc02b   ECDHE-ECDSA-AES128-GCM-SHA256   ECDH 253   AESGCM ..."
    ciphers = re.findall(r"^ x([0-9a-f]+)\s+(\S+)\s+(\S+)", out, re.M)
    if not ciphers:
        problems.append("no cipher table in the output")
    for code, name, kx in ciphers:
        if not (kx.startswith("ECDH") or kx.startswith("DH")):
            problems.append("no forward secrecy: %s (%s)" % (name, kx))
    print("%s certificate: %d ciphers accepted, all with forward secrecy: %s" %
          (kind, len(ciphers), ", ".join(n for _, n, _ in ciphers)))
    return problems


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("medusad")
    ap.add_argument("--keep-output", metavar="DIR")
    args = ap.parse_args()
    if not shutil.which("testssl"):
        print("testssl (Debian's testssl.sh) is not installed: packaging/bootstrap installs it")
        return 1
    failed = False
    for kind in ("ecdsa", "rsa"):
        out = run(os.path.abspath(args.medusad), kind, args.keep_output)
        problems = judge(out, kind)
        for p in problems:
            print("FAIL (%s): %s" % (kind, p))
        failed |= bool(problems)
        if problems:
            print(out)
    print("testssl: %s" % ("problems found" if failed else "no finding against the defaults"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
