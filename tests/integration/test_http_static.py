"""HTTP static files, virtual hosts, redirects and the status page, with curl:
keep-alive reuse, conditional GETs, ranges, gzip siblings, directory
redirects on a non-default port, listings, traversal and symlink
confinement, the open-file cache noticing changes."""
import collections
import gzip
import json
import os
import time
import re

import pytest

from harness import RawHTTP, Server, curl, free_port, http_conf, temp_dir, wait_for

port = free_port()
base = "http://127.0.0.1:%d" % port
Site = collections.namedtuple("Site", "srv www data big text")


@pytest.fixture(scope="module")
def site():
    tmp = temp_dir()
    www = os.path.join(tmp, "www")
    os.makedirs(os.path.join(www, "sub"))
    os.makedirs(os.path.join(www, "list"))
    os.makedirs(os.path.join(tmp, "other"))
    os.makedirs(os.path.join(tmp, "secret"))
    with open(os.path.join(www, "index.html"), "w") as f:
        f.write("<p>home</p>\n")
    with open(os.path.join(www, "sub", "index.html"), "w") as f:
        f.write("<p>sub</p>\n")
    data = bytes(range(256)) * 40  # 10240 bytes
    with open(os.path.join(www, "data.bin"), "wb") as f:
        f.write(data)
    big = os.urandom(3 << 20)
    with open(os.path.join(www, "big.bin"), "wb") as f:
        f.write(big)
    text = "hello gzip world\n" * 100
    with open(os.path.join(www, "page.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(www, "page.txt.gz"), "wb") as f:
        f.write(gzip.compress(text.encode()))
    with open(os.path.join(www, "style.css"), "w") as f:
        f.write("body{}\n")
    with open(os.path.join(www, "list", "<b>&x\".txt"), "w") as f:
        f.write("x")
    os.makedirs(os.path.join(www, "list", "folder"))
    with open(os.path.join(tmp, "secret", "passwd"), "w") as f:
        f.write("root:x:0:0\n")
    with open(os.path.join(tmp, "other", "o.txt"), "w") as f:
        f.write("other vhost\n")
    os.symlink(os.path.join(tmp, "secret", "passwd"), os.path.join(www, "escape"))
    os.symlink("../secret", os.path.join(www, "escdir"))
    os.symlink("sub/index.html", os.path.join(www, "inside"))
    os.mkfifo(os.path.join(www, "fifo"))

    vhosts = """
      { names = [ "other.test", "*.other.test" ];
        handlers = ( { type = "static"; path = "/"; root = "other"; } ); },
      { names = [ "*" ];
        handlers = (
          { type = "status"; path = "/status"; },
          { type = "redirect"; path = "/old/"; to = "/sub/"; status = 301; },
          { type = "redirect"; path = "/tmp/"; to = "http://elsewhere.test/"; status = 307; },
          { type = "redirect"; path = "/"; pattern = "^/posts/([0-9]+)$"; to = "/p?id=$1"; status = 308; },
          { type = "redirect"; path = "/found"; to = "/"; status = 302; keep_query = false; },
          { type = "static"; path = "/list/"; root = "www/list"; listing = true; },
          { type = "static"; path = "/open/"; root = "www"; allow_symlinks_outside = true; },
          { type = "static"; path = "/"; root = "www"; cache_valid = 0.2; }
        ); }"""
    srv = Server(http_conf(port, vhosts, 'server = "medusa-test";'), workers=2, dir=tmp)
    yield Site(srv, www, data, big, text)
    srv.stop()




def test_get_and_head_status_and_headers(site):
    st, h, body, _ = curl(base + "/")
    assert st == 200 and body == b"<p>home</p>\n", (st, body)
    assert h["server"] == "medusa-test" and h["content-type"].startswith("text/html")
    assert re.match(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", h["date"]), h["date"]
    assert h["content-length"] == "12" and h["etag"].startswith('"')
    c = RawHTTP(port)
    c.send(b"HEAD /data.bin HTTP/1.1\r\nHost: x\r\n\r\nGET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
    r = c.response(head_only=True)
    assert r.status == 200 and r.header("content-length") == "10240", r.headers
    assert r.header("content-type") == "application/octet-stream"
    r = c.response()  # the next response follows at once: HEAD sent no body
    assert r.status == 200 and r.body == b"<p>home</p>\n", r.body
    c.close()
    st, h, _, _ = curl(base + "/style.css")
    assert h["content-type"].startswith("text/css"), h


def test_keepalive_reuses_the_connection(site):
    # Keep-alive: curl reuses one connection for several URLs.
    st, h, body, err = curl("-v", base + "/", base + "/data.bin", base + "/sub/")
    assert "Re-using existing connection" in err or "Reusing existing connection" in err, err


def test_a_big_file_arrives_whole(site):
    big = site.big
    # Big file arrives whole (sendfile path).
    st, h, body, _ = curl(base + "/big.bin")
    assert st == 200 and body == big


def test_conditional_gets(site):
    # Conditional GETs.
    st, h, _, _ = curl(base + "/data.bin")
    etag, lm = h["etag"], h["last-modified"]
    st, h2, body, _ = curl("-H", "If-None-Match: " + etag, base + "/data.bin")
    assert st == 304 and body == b"" and h2["etag"] == etag, (st, h2)
    assert "content-length" not in h2
    st, _, _, _ = curl("-H", 'If-None-Match: "nope", W/' + etag, base + "/data.bin")
    assert st == 304
    st, _, _, _ = curl("-H", 'If-None-Match: "nope"', base + "/data.bin")
    assert st == 200
    st, _, _, _ = curl("-H", "If-Modified-Since: " + lm, base + "/data.bin")
    assert st == 304
    st, _, _, _ = curl("-H", "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT", base + "/data.bin")
    assert st == 200
    st, _, _, _ = curl("-H", "If-Modified-Since: garbage", base + "/data.bin")
    assert st == 200
    # If-None-Match wins over If-Modified-Since
    st, _, _, _ = curl("-H", 'If-None-Match: "nope"', "-H", "If-Modified-Since: " + lm,
                       base + "/data.bin")
    assert st == 200


def test_ranges(site):
    data = site.data
    big = site.big
    etag = curl(base + "/data.bin")[1]["etag"]
    # Ranges.
    st, h, body, _ = curl("-r", "10-19", base + "/data.bin")
    assert st == 206 and body == data[10:20] and h["content-range"] == "bytes 10-19/10240", (st, h)
    st, h, body, _ = curl("-r", "-100", base + "/data.bin")
    assert st == 206 and body == data[-100:]
    st, h, body, _ = curl("-r", "10000-", base + "/data.bin")
    assert st == 206 and body == data[10000:]
    st, h, body, _ = curl("-r", "1000000-2000000", base + "/big.bin")
    assert st == 206 and body == big[1000000:2000001]
    st, h, body, _ = curl("-r", "20000-30000", base + "/data.bin")
    assert st == 416 and h["content-range"] == "bytes */10240", (st, h)
    st, h, body, _ = curl("-r", "0-1,5-6", base + "/data.bin")
    assert st == 200 and body == data
    st, h, body, _ = curl("-r", "0-9", "-H", 'If-Range: "stale"', base + "/data.bin")
    assert st == 200 and body == data
    st, h, body, _ = curl("-r", "0-9", "-H", "If-Range: " + etag, base + "/data.bin")
    assert st == 206 and body == data[:10]


def test_gzip_sibling(site):
    text = site.text
    # gzip sibling.
    st, h, body, _ = curl("-H", "Accept-Encoding: gzip", base + "/page.txt")
    assert st == 200 and h.get("content-encoding") == "gzip", h
    assert gzip.decompress(body).decode() == text and h["content-type"].startswith("text/plain")
    assert "accept-encoding" in h.get("vary", "").lower()
    st, h, body, _ = curl(base + "/page.txt")
    assert st == 200 and "content-encoding" not in h and body.decode() == text
    st, h, body, _ = curl("-H", "Accept-Encoding: gzip;q=0, identity", base + "/page.txt")
    assert "content-encoding" not in h
    st, h, body, _ = curl("--compressed", base + "/page.txt")
    assert body.decode() == text


def test_directory_redirect_keeps_host_and_port(site):
    # Directory redirect with the right host and port, index files.
    st, h, body, _ = curl(base + "/sub?x=1")
    assert st == 301 and h["location"] == base + "/sub/?x=1", h
    st, h, body, _ = curl(base + "/sub/")
    assert st == 200 and body == b"<p>sub</p>\n"
    st, h, body, _ = curl("-H", "Host: example.org:8123", base + "/sub")
    assert h["location"] == "http://example.org:8123/sub/", h


def test_listing_escapes_names_and_folders_without_index_are_forbidden(site):
    www = site.www
    # Listing: names escaped; no listing elsewhere -> 403.
    st, h, body, _ = curl(base + "/list/")
    page = body.decode()
    assert st == 200 and "&lt;b&gt;&amp;x&quot;.txt" in page and "<b>" not in page, page
    assert 'href="folder/"' in page and "%3Cb%3E" in page
    # nginx's autoindex columns: folders first, then size (exact bytes in the
    # title) and modification time (UTC)
    assert page.index("folder/") < page.index("&lt;b&gt;")
    name = os.path.join(www, "list", "<b>&x\".txt")
    size = os.path.getsize(name)
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(os.path.getmtime(name)))
    assert 'title="%d bytes">%d B<' % (size, size) in page, page
    assert when in page
    with open(os.path.join(www, "list", "big.bin"), "wb") as f:
        f.write(b"x" * 1536)
    page = curl(base + "/list/")[2].decode()
    assert 'title="1536 bytes">1.5 KiB<' in page, page
    os.unlink(os.path.join(www, "list", "big.bin"))
    # a symlink out of the root: listed as itself, nothing of its target shown
    link = os.path.join(www, "list", "out")
    os.symlink("/etc/hostname", link)
    try:
        page = curl(base + "/list/")[2].decode()
        row = page[page.index('href="out"'):]
        row = row[:row.index("</tr>")]
        assert '<td class="n">-</td>' in row, row
    finally:
        os.unlink(link)
    st, _, _, _ = curl(base + "/list/folder/")
    assert st == 200
    os.makedirs(os.path.join(www, "noindex"), exist_ok=True)
    st, _, _, _ = curl(base + "/noindex/")
    assert st == 403


def test_virtual_hosts(site):
    # Virtual hosts.
    st, _, body, _ = curl("-H", "Host: other.test", base + "/o.txt")
    assert st == 200 and body == b"other vhost\n"
    st, _, body, _ = curl("-H", "Host: WWW.Other.Test:99", base + "/o.txt")
    assert st == 200 and body == b"other vhost\n"
    st, _, _, _ = curl("-H", "Host: nothere.test", base + "/o.txt")
    assert st == 404
    st, _, body, _ = curl("-H", "Host: nothere.test", base + "/")
    assert body == b"<p>home</p>\n"


def test_redirects(site):
    # Redirects.
    st, h, _, _ = curl(base + "/old/a/b.html?q=1")
    assert st == 301 and h["location"] == "/sub/a/b.html?q=1", h
    st, h, _, _ = curl(base + "/tmp/x")
    assert st == 307 and h["location"] == "http://elsewhere.test/x", h
    st, h, _, _ = curl(base + "/posts/42")
    assert st == 308 and h["location"] == "/p?id=42", h
    st, h, _, _ = curl(base + "/found?drop=1")
    assert st == 302 and h["location"] == "/", h
    st, _, _, _ = curl(base + "/posts/abc")  # pattern fails: falls through to static
    assert st == 404


def test_traversal_and_symlinks_are_confined(site):
    # Traversal and confinement.
    def raw_status(target, secret_ok=False):
        c = RawHTTP(port)
        c.send(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            r = c.response()
        except EOFError:
            return 0
        finally:
            c.close()
        assert secret_ok or b"root:x" not in r.body, target
        return r.status
    for t, want in [(b"/../secret/passwd", (400, 403)), (b"/%2e%2e/secret/passwd", (403,)),
                    (b"/sub/../../secret/passwd", (400, 403)), (b"/..%2fsecret/passwd", (404, 400)),
                    (b"/%2E%2E%2Fsecret%2Fpasswd", (404, 400)), (b"/a%00b", (400,)),
                    (b"/escape", (403,)), (b"/escdir/passwd", (403,)),
                    (b"/sub%2findex.html", (404,)), (b"/fifo", (403,))]:
        st = raw_status(t)
        assert st in want, (t, st)
    assert raw_status(b"/inside") == 200
    assert raw_status(b"/open/escape", secret_ok=True) == 200  # allowed by the per-root option
    assert raw_status(b"/nothing-here") == 404


def test_error_pages(site):
    # Error pages are small valid HTML with the right headers.
    st, h, body, _ = curl(base + "/nothing-here")
    assert st == 404 and h["content-type"].startswith("text/html")
    assert body.startswith(b"<!DOCTYPE html>") and b"404 Not Found" in body
    assert int(h["content-length"]) == len(body)
    st, h, _, _ = curl("-X", "DELETE", base + "/index.html")
    assert st == 405 and h["allow"] == "GET, HEAD", h


def test_the_open_file_cache_notices_changes(site):
    www = site.www
    # The cache notices a changed file (cache_valid 0.2 s).
    with open(os.path.join(www, "index.html"), "w") as f:
        f.write("<p>changed home</p>\n")
    wait_for(lambda: curl(base + "/")[2] == b"<p>changed home</p>\n", 5, "cache revalidation")
    os.unlink(os.path.join(www, "style.css"))
    wait_for(lambda: curl(base + "/style.css")[0] == 404, 5, "deleted file gone")


def test_status_page_html_json_and_prometheus(site):
    for path in ["/", "/data.bin", "/sub/", "/old/x", "/posts/1", "/found", "/tmp/y"] * 8 + \
            ["/missing"] * 8:
        curl(base + path)
    # Status page.
    st, h, body, _ = curl(base + "/status")
    assert st == 200 and b"<h1>medusa" in body and b"web" in body
    st, h, body, _ = curl(base + "/status.json")
    js = json.loads(body)
    assert h["content-type"] == "application/json"
    assert js["uptime_seconds"] >= 0 and len(js["workers"]) == 2
    assert "chat" in js and "echo" in js  # every module's figures
    web = [s for s in js["http"]["servers"] if s["name"] == "web"][0]
    assert web["requests"] > 50 and web["responses"]["2xx"] > 20 and web["responses"]["4xx"] > 5
    assert web["handler_hits"]["static"] > 20 and web["handler_hits"]["redirect"] >= 4
    assert len(web["workers"]) == 2
    assert sum(w["requests"] for w in web["workers"]) == web["requests"]
    st, h, body, _ = curl(base + "/metrics")
    assert h["content-type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for line in body.decode().splitlines():
        if line.startswith("#") or not line:
            continue
        m = re.match(r'^([a-z_][a-z0-9_]*)(\{[^}]*\})? (\d+(?:\.\d+)?)$', line)
        assert m, line
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    assert samples['medusa_http_responses_total{server="web",class="2xx"}'] > 20
    assert "medusa_uptime_seconds" in samples
