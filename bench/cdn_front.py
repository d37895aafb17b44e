#!/usr/bin/env python3
"""A registry's public face with a CDN behind it, for bench/run.py (loopback only, Python stdlib only).

distribution's own `redirect` middleware needs S3, so this stands in front of a filesystem-backed registry:

  front port   every request is relayed to the registry (--registry) as is, except blob GETs
               (`GET /v2/NAME/blobs/sha256:HEX`): those are checked with a HEAD carrying the client's headers
               (so token auth still decides), then answered `307 Location: http://127.0.0.1:CDN/blobs/sha256/HEX?...`
               like Docker Hub's redirect to its CDN. A failed check relays the registry's own answer to the GET.
  CDN port     `GET`/`HEAD /blobs/sha256/HEX` serve the registry's stored bytes (--storage, distribution's
               filesystem layout) with single-range `Range` support (206, 416; other Range values are ignored), through sendfile(2).
               `GET /_active` answers the number of transfers in progress (bench/run.py waits for 0).

Logging: one line per finished response on stdout, flushed, after the last byte went out (or the client left):
  FRONT <METHOD> <path> <status> <body bytes sent>
  CDN <METHOD> <path> <status> <body bytes sent>
so a benchmark counts upstream fetches and upstream bytes by reading its log between two offsets.

Usage: cdn_front.py --front-port F --cdn-port C --registry http://127.0.0.1:R --storage DIR
"""
import argparse, http.client, os, re, sys, threading, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BLOB_GET = re.compile(r"^/v2/(.+)/blobs/(sha256):([0-9a-f]{64})$")
CDN_PATH = re.compile(r"^/blobs/(sha256)/([0-9a-f]{64})$")
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}
LOG_LOCK = threading.Lock()


def log(*parts):
    with LOG_LOCK:
        sys.stdout.write(" ".join(str(p) for p in parts) + "\n")
        sys.stdout.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # 32+ clients connect at once; the default backlog of 5 costs SYN retries

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):  # a client hanging up is no error
            super().handle_error(request, client_address)


class Front(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def upstream(self):
        """This thread's keep-alive connection to the registry (one per client connection)."""
        conn = getattr(self, "_conn", None)
        if conn is None:
            conn = self._conn = http.client.HTTPConnection(self.server.registry_host, self.server.registry_port, timeout=60)
        return conn

    def send_upstream(self, method, body):
        for attempt in (0, 1):  # a kept-alive connection the registry closed meanwhile is reopened once
            conn = self.upstream()
            try:
                conn.putrequest(method, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():
                    if k.lower() not in HOP and k.lower() != "content-length":
                        conn.putheader(k, v)
                if body is not None:
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body)
                return conn.getresponse()
            except (http.client.HTTPException, OSError):
                conn.close()
                self._conn = None
                if attempt:
                    raise

    def relay(self, method, body=None):
        resp = self.send_upstream(method, body)
        self.send_response(resp.status, resp.reason)
        length = resp.getheader("Content-Length")
        data = None
        if length is None and method != "HEAD" and resp.status not in (204, 304):
            data = resp.read()
        for k, v in resp.getheaders():
            if k.lower() not in HOP and not (data is not None and k.lower() == "content-length"):
                self.send_header(k, v)
        if data is not None:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        sent = 0
        if method != "HEAD":
            if data is not None:
                self.wfile.write(data); sent = len(data)
            else:
                while True:
                    piece = resp.read(1 << 20)
                    if not piece:
                        break
                    self.wfile.write(piece); sent += len(piece)
        resp.read()  # drain (HEAD, errors) so the connection can be reused
        log("FRONT", method, self.path, resp.status, sent)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else None

    def do_GET(self):
        m = BLOB_GET.match(urllib.parse.urlsplit(self.path).path)
        if m:
            check = self.send_upstream("HEAD", None)
            check.read()
            if check.status == 200:
                expires = int(time.time()) + 1200
                location = f"http://127.0.0.1:{self.server.cdn_port}/blobs/{m.group(2)}/{m.group(3)}?expires={expires}&sig=bench"
                self.send_response(307)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                log("FRONT", "GET", self.path, 307, 0)
                return
        self.relay("GET")

    def do_HEAD(self):
        self.relay("HEAD")

    def do_POST(self):
        self.relay("POST", self.body() or b"")

    def do_PUT(self):
        self.relay("PUT", self.body() or b"")

    def do_PATCH(self):
        self.relay("PATCH", self.body() or b"")

    def do_DELETE(self):
        self.relay("DELETE")


class CDN(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def plain(self, status, text, extra=None):
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        log("CDN", self.command, self.path, status, 0)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/_active":
            with self.server.lock:
                n = self.server.active
            body = f"{n}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        m = CDN_PATH.match(path)
        if not m:
            return self.plain(404, "not found\n")
        hexd = m.group(2)
        file = os.path.join(self.server.storage, "docker/registry/v2/blobs", m.group(1), hexd[:2], hexd, "data")
        try:
            f = open(file, "rb")
        except OSError:
            return self.plain(404, "no such blob\n")
        with f:
            size = os.fstat(f.fileno()).st_size
            start, end, status = 0, size - 1, 200
            # one range is served; a Range this cannot parse (several ranges, other units) is ignored (RFC 9110 14.2)
            r = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", self.headers.get("Range") or "")
            if r and (r.group(1) or r.group(2)):
                if r.group(1) == "":
                    start = max(0, size - int(r.group(2)))
                else:
                    start = int(r.group(1))
                    if r.group(2) != "":
                        end = min(end, int(r.group(2)))
                if start >= size or start > end:
                    return self.plain(416, "range not satisfiable\n", {"Content-Range": f"bytes */{size}"})
                status = 206
            count = end - start + 1
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(count))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            sent = 0
            if self.command == "GET":
                with self.server.lock:
                    self.server.active += 1
                try:
                    out = self.connection.fileno()
                    while sent < count:
                        n = os.sendfile(out, f.fileno(), start + sent, min(count - sent, 8 << 20))
                        if n == 0:
                            break
                        sent += n
                except OSError:
                    self.close_connection = True  # the client left; what went out is still counted
                finally:
                    with self.server.lock:
                        self.server.active -= 1
            log("CDN", self.command, self.path, status, sent)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--front-port", type=int, required=True)
    ap.add_argument("--cdn-port", type=int, required=True)
    ap.add_argument("--registry", required=True, help="the registry's URL, http://127.0.0.1:PORT")
    ap.add_argument("--storage", required=True, help="the registry's filesystem rootdirectory")
    args = ap.parse_args()
    reg = urllib.parse.urlsplit(args.registry)
    if reg.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("--registry must be on loopback")
    front = Server(("127.0.0.1", args.front_port), Front)
    front.registry_host, front.registry_port, front.cdn_port = reg.hostname, reg.port, args.cdn_port
    cdn = Server(("127.0.0.1", args.cdn_port), CDN)
    cdn.storage, cdn.lock, cdn.active = os.path.abspath(args.storage), threading.Lock(), 0
    threading.Thread(target=cdn.serve_forever, daemon=True).start()
    log("listening", f"front 127.0.0.1:{args.front_port}", f"cdn 127.0.0.1:{args.cdn_port}")
    front.serve_forever()


if __name__ == "__main__":
    main()
