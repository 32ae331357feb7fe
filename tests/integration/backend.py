"""A test backend for the reverse proxy: a threaded HTTP/1.1 server (Python's
http.server) with keep-alive, run as its own process so a test can kill it.

    /usr/bin/python3 backend.py PORT NAME [HOST]

It counts the TCP connections it accepted and the requests it answered
(GET /_stats) and answers:
  /echo          JSON: method, path, headers (as received), body length
  /slow?ms=N     the same after N ms
  /big?n=N       N bytes (Content-Length); &chunked=1 chunked; &close=1
                 delimited by closing
  /upload        (POST/PUT) reads the body (Content-Length or chunked),
                 answers its length and SHA-256
  /health        200, or 503 after GET /_health/down (GET /_health/up)
  /ws            a WebSocket that echoes text frames
  /code/N        an empty response with status N
Every answer carries X-Backend: NAME.
"""
import base64
import hashlib
import json
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

STATE = {"conns": 0, "requests": 0, "healthy": True}
LOCK = threading.Lock()
NAME = "backend"
PATTERN = bytes(range(256)) * 256  # 64 KiB


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with LOCK:
            STATE["conns"] += 1

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body=b"", ctype="application/json", extra=None):
        self.send_response(status)
        self.send_header("X-Backend", NAME)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def read_body(self, sink):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    return
                left = size
                while left:
                    data = self.rfile.read(min(left, 1 << 20))
                    sink(data)
                    left -= len(data)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length", "0") or 0)
        while n:
            data = self.rfile.read(min(n, 1 << 20))
            if not data:
                return
            sink(data)
            n -= len(data)

    def handle_any(self):
        with LOCK:
            STATE["requests"] += 1
        url = urlsplit(self.path)
        q = parse_qs(url.query)
        path = url.path
        if path == "/_stats":
            with LOCK:
                return self.reply(200, json.dumps(STATE).encode())
        if path == "/_health/down" or path == "/_health/up":
            STATE["healthy"] = path.endswith("up")
            return self.reply(200, b"{}")
        if path == "/health":
            return self.reply(200 if STATE["healthy"] else 503, b"{}")
        if path.startswith("/code/"):
            return self.reply(int(path[6:]))
        if path == "/ws":
            return self.websocket()
        if path == "/big":
            return self.big(int(q["n"][0]), "chunked" in q, "close" in q)
        if path == "/slow":
            time.sleep(int(q.get("ms", ["1000"])[0]) / 1000)
        if path == "/upload":
            h = hashlib.sha256()
            count = [0]

            def sink(d):
                h.update(d)
                count[0] += len(d)
            self.read_body(sink)
            return self.reply(200, json.dumps({"length": count[0], "sha256": h.hexdigest()}).encode())
        body = []
        self.read_body(body.append)
        info = {"method": self.command, "path": self.path, "version": self.request_version,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body_length": sum(len(b) for b in body), "backend": NAME}
        self.reply(200, json.dumps(info).encode())

    def big(self, n, chunked, close):
        self.send_response(200)
        self.send_header("X-Backend", NAME)
        self.send_header("Content-Type", "application/octet-stream")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif close:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(n))
        self.end_headers()
        if self.command == "HEAD":
            return
        left = n
        while left:
            k = min(left, len(PATTERN))
            if chunked:
                self.wfile.write(b"%x\r\n" % k + PATTERN[:k] + b"\r\n")
            else:
                self.wfile.write(PATTERN[:k])
            left -= k
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1(
            (key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.send_header("X-Backend", NAME)
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True
        rf = self.rfile
        while True:
            head = rf.read(2)
            if len(head) < 2:
                return
            op, ln = head[0] & 0x0F, head[1] & 0x7F
            if ln == 126:
                ln = int.from_bytes(rf.read(2), "big")
            elif ln == 127:
                ln = int.from_bytes(rf.read(8), "big")
            mask = rf.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(rf.read(ln)))
            if op == 8:
                self.wfile.write(b"\x88\x00")
                return
            out = b"echo: " + data
            hdr = bytes([0x81])
            hdr += bytes([len(out)]) if len(out) < 126 else bytes([126]) + len(out).to_bytes(2, "big")
            self.wfile.write(hdr + out)
            self.wfile.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        pass  # a client (the proxy) that went away mid-request is not news


def main():
    global NAME
    port, NAME = int(sys.argv[1]), sys.argv[2]
    host = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"
    srv = Server((host, port), Handler)
    print("ready", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    socketserver.TCPServer.allow_reuse_address = True
    main()
