#!/usr/bin/python3
"""No password or secret in any log line: reads every log the integration
suite's servers wrote (kept in MEDUSA_TEST_LOGS by harness.keep_logs) for
every password and console secret the suite uses, which it collects from the
tests' own sources (write_secret(...) contents, the arguments of the crypt
helpers and of logins, htpasswd's pw-<user>), plus the few below.

    tests/security/log_secrets.py LOG_FOLDER

ctest runs it once after every integration test (a fixture's cleanup).
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(HERE, "..", "integration")

PATTERNS = [
    r'write_secret\((?:os\.path\.join\([^)]*\)|\w+),\s*"([^"]+)"',  # console secrets
    r'(?:crypt\.crypt|yescrypt|sha512)\("([^"]+)"',           # users files
    r'\bh\("([^"]+)"\)\)',                                    # test_ftp's crypt helper
    r'\.login\("[^"]*",\s*"([^"]+)"\)',                       # FTP logins
    r'"-u",\s*"[^:"]*:([^"]+)"',                               # curl -u user:password
    r'(?:admin|op)_secret(?:, op_secret)?\s*=\s*"([^"]+)"(?:,\s*"([^"]+)")?',
]


def secrets():
    found = set()
    for name in os.listdir(TESTS):
        if not name.endswith(".py"):
            continue
        text = open(os.path.join(TESTS, name)).read()
        for p in PATTERNS:
            for m in re.finditer(p, text):
                found.update(g for g in m.groups() if g)
        if "htpasswd" in text:  # make_users: every user's password is pw-<user>
            for m in re.finditer(r'"(\w+)":\s*"-\w"', text):
                found.add("pw-" + m.group(1))
    # too short or too common to mean anything in a log line
    return sorted(s for s in found if len(s) >= 6 and s not in ("secret",))


def main():
    folder = sys.argv[1]
    words = secrets()
    assert len(words) >= 10, "too few secrets found in the tests' sources: %r" % words
    logs = [os.path.join(folder, n) for n in sorted(os.listdir(folder))] if os.path.isdir(folder) else []
    # a check that cannot fail is no check: it must see the suite's logs
    # (the whole suite leaves hundreds; ctest -R one test, a few)
    assert logs, "no logs in %s: did the integration tests run?" % folder
    hits, lines = [], 0
    for path in logs:
        with open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                lines += 1
                for w in words:
                    if w.encode() in line:
                        hits.append("%s:%d: %r in %s" % (os.path.basename(path), n, w,
                                                         line.decode(errors="replace").rstrip()))
    print("%d secrets looked for in %d lines of %d logs" % (len(words), lines, len(logs)))
    print("  " + ", ".join(words))
    if hits:
        print("\n".join(hits[:50]))
        sys.exit(1)


if __name__ == "__main__":
    main()
