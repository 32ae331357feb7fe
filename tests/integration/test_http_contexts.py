"""Per-worker handler contexts (the static file cache, auth's verified
credentials, redirect's compiled pattern): each worker makes its own for
each configuration snapshot it serves and disposes of it on the same
worker, once neither the worker nor any connection accepted under that
snapshot uses it, across reloads, live scaling and moved connections.
(Under TSan the same run proves no other thread touches them.)"""
import collections
import http.client
import os
import re
import warnings

from harness import RawHTTP, Server, free_port, temp_dir, wait_for

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

LINE = re.compile(r" (w\d+): http: contexts of server (\S+) \(snapshot (\d+)\) (made|disposed)$")


def conf(port, server_name):
    return ('http = ( { name = "web"; listen = [ "127.0.0.1:%d" ]; server = "%s";\n'
            ' vhosts = ( { names = [ "*" ]; handlers = (\n'
            '  { type = "auth"; path = "/private/"; users = "users"; },\n'
            '  { type = "redirect"; path = "/"; pattern = "^/r/([0-9]+)$"; to = "/n/$1"; },\n'
            '  { type = "static"; path = "/"; root = "www"; } ); } ); } );\n'
            % (port, server_name))


def events(log):
    out = []
    for line in log.splitlines():
        m = LINE.search(line)
        if m:
            out.append(m.groups())  # (worker, server, snapshot, what)
    return out


def traffic(port, n=40):
    """Requests that touch every handler, on new connections (so on every
    worker)."""
    for i in range(n):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        path = ["/index.html", "/r/%d" % i, "/private/p.txt"][i % 3]
        headers = {"Authorization": "Basic YWxpY2U6c2VjcmV0"} if "private" in path else {}
        c.request("GET", path, headers=headers)
        r = c.getresponse()
        r.read()
        assert r.status in (200, 301), (path, r.status)
        c.close()


def test_contexts_are_made_and_disposed_on_their_own_worker():
    tmp = temp_dir()
    os.makedirs(os.path.join(tmp, "www", "private"))
    with open(os.path.join(tmp, "www", "index.html"), "w") as f:
        f.write("hello\n")
    with open(os.path.join(tmp, "www", "private", "p.txt"), "w") as f:
        f.write("private\n")
    with open(os.path.join(tmp, "users"), "w") as f:
        f.write("alice:%s\n" % crypt.crypt("secret", crypt.mksalt(crypt.METHOD_SHA512)))
    port = free_port()
    srv = Server(conf(port, "one"), workers=2, dir=tmp, admin=True, level="debug")
    traffic(port)

    # A keep-alive connection accepted under snapshot 1 holds its worker's
    # snapshot-1 contexts across a reload...
    kept = RawHTTP(port)
    kept.send(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
    assert kept.response().header("server") == "one"
    kept_worker = [c["worker"] for c in srv.ctl_json("conns", "web")][0]
    assert "configuration reloaded" in srv.reload(conf(port, "two"))
    traffic(port)
    kept.send(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
    assert kept.response().header("server") == "one"
    ev = events(srv.log_text())
    assert ("w%d" % kept_worker, "web", "1", "disposed") not in ev, ev
    others = {w for w, _, s, what in ev if s == "1" and what == "made"} - {"w%d" % kept_worker}
    for w in others:  # a worker no connection holds snapshot 1 on lets it go
        assert (w, "web", "1", "disposed") in ev, (w, ev)
    # ... until it closes.
    kept.close()
    wait_for(lambda: ("w%d" % kept_worker, "web", "1", "disposed") in events(srv.log_text()), 10,
             "snapshot 1's contexts disposed on worker %d" % kept_worker)

    # Idle connections accepted under snapshot 2 move to a worker that
    # started under snapshot 3: it makes snapshot-2 contexts just for them.
    held = [RawHTTP(port) for _ in range(8)]
    for c in held:
        c.send(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response().status == 200
    srv.reload(conf(port, "three"))
    srv.ctl("workers", "set", "3")
    srv.wait_workers_settled()
    traffic(port)
    per_worker = collections.Counter(c["worker"] for c in srv.ctl_json("conns", "web"))
    srv.ctl("worker", "drain", str(per_worker.most_common(1)[0][0]))
    srv.wait_workers_settled()
    # More scaling and reloads while they stay open.
    for step, n in enumerate((1, 2, 3)):
        srv.ctl("workers", "set", str(n))
        srv.wait_workers_settled()
        srv.reload(conf(port, "s%d" % step))
        traffic(port, 15)
    for c in held:  # they kept their snapshot wherever they went
        c.send(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response().header("server") == "two"
        c.close()
    assert srv.stop() == 0

    ev = events(srv.log_text())
    made = collections.Counter((w, s) for w, _, s, what in ev if what == "made")
    disposed = collections.Counter((w, s) for w, _, s, what in ev if what == "disposed")
    assert made and made == disposed, (made, disposed)
    # A worker holds at most one set per snapshot at a time: it may make a
    # snapshot's set again only after disposing of the previous one (a
    # moved connection can bring back a snapshot the worker already let go).
    held_sets = collections.Counter()
    for w, _, s, what in ev:
        held_sets[(w, s)] += 1 if what == "made" else -1
        assert held_sets[(w, s)] in (0, 1), (w, s, ev)
    assert not any(held_sets.values()), held_sets
    assert len({s for _, s in made}) >= 5 and len({w for w, _ in made}) >= 3, made
    assert "disposed on worker" not in srv.log_text()
    # A moved connection brought snapshot 2 to a worker already serving a
    # later one: that worker made snapshot-2 contexts just for it.
    newest = 0
    late = []
    for w, _, s, what in ev:
        if what == "made":
            if int(s) < newest:
                late.append((w, s))
            newest = max(newest, int(s))
    assert ("2" in {s for _, s in late}), ev
