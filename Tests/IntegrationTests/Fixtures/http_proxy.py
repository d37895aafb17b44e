#!/usr/bin/env python3
"""A minimal forward HTTP proxy for tests: absolute-URI GET/HEAD requests are forwarded to their target and
the response streamed back. Each request line is printed to stdout (flushed), so tests can count what went
through the proxy. Only loopback targets are allowed.

Usage: http_proxy.py --port P [--rate BYTES_PER_SECOND]

With --rate, bodies are streamed in 64 KiB pieces no faster than that (a slow link, so tests can interrupt a
transfer half way).
"""
import argparse, http.client, sys, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Proxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def forward(self, method):
        url = urllib.parse.urlsplit(self.path)
        if url.scheme != "http" or url.hostname not in ("127.0.0.1", "localhost", "::1"):
            self.send_error(403, "loopback http targets only")
            return
        print(f"PROXY {method} {self.path}", flush=True)
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=30)
        target = url.path + ("?" + url.query if url.query else "")
        conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        # Repeated headers (registry clients send several Accept lines) are forwarded one by one.
        for k, v in self.headers.items():
            if k.lower() not in ("proxy-connection", "connection", "keep-alive"):
                conn.putheader(k, v)
        conn.endheaders()
        resp = conn.getresponse()
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "keep-alive", "transfer-encoding"):
                self.send_header(k, v)
        rate = self.server.rate
        if rate and method != "HEAD" and resp.getheader("Content-Length") is not None:
            self.end_headers()
            started, sent = time.monotonic(), 0
            while True:
                piece = resp.read(65536)
                if not piece:
                    break
                self.wfile.write(piece)
                sent += len(piece)
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            conn.close()
            return
        body = b"" if method == "HEAD" else resp.read()
        if resp.getheader("Content-Length") is None and method != "HEAD":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)
        conn.close()

    def do_GET(self):
        self.forward("GET")

    def do_HEAD(self):
        self.forward("HEAD")

    def log_message(self, *args):
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--rate", type=int, default=0)
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Proxy)
    server.rate = args.rate
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
