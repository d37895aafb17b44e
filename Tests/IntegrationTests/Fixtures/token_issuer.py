#!/usr/bin/env python3
"""A small Docker registry token server (the `auth: token` protocol of distribution 2.x), for tests only.

  GET  /token?service=S&scope=repository:NAME:pull[&scope=...]   optional HTTP Basic credentials
  POST /token   (OAuth2 form: grant_type=password, username, password, service, scope)
  GET  /stats   JSON counters + the last requests, so tests can assert how many tokens were issued
  POST /reset   zero the counters
  GET  /healthz

Policy: anonymous callers get `pull` on every repository except those under a --private-prefix; callers with
valid --user credentials get `pull` and `push` (and `delete`, `*`) on every repository and `registry:catalog:*`.
Wrong credentials answer 401. A `service` that is not --service answers 400. Scopes the caller may not have
are left out of the token (the spec's intersection rule); the registry then answers 401 insufficient_scope.

Tokens are JWTs signed RS256 with --key; the header's `x5c` holds --cert, which the registry trusts as its
`rootcertbundle`. If --key/--cert do not exist they are generated with the `openssl` CLI
(`--generate-only` generates them and exits). Signing uses the `openssl` CLI too: Python stdlib only.

Flags: --port (0 = pick one; the chosen port is printed as `listening on 127.0.0.1:PORT`), --key, --cert,
--issuer, --service, --user user:password (repeatable), --private-prefix (repeatable), --expires-in SECONDS.
Listens on 127.0.0.1 only.
"""

import argparse
import base64
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def generate_key_and_cert(key_path, cert_path, cn="cove-test-token-issuer"):
    for p in (key_path, cert_path):
        d = os.path.dirname(os.path.abspath(p))
        os.makedirs(d, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
         "-keyout", key_path, "-out", cert_path, "-days", "3650", "-subj", "/CN=" + cn],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)


def cert_der_b64(cert_path):
    """Standard (not url-safe) base64 of the DER certificate, as x5c wants."""
    der = subprocess.run(["openssl", "x509", "-in", cert_path, "-outform", "DER"],
                         check=True, stdout=subprocess.PIPE, timeout=30).stdout
    return base64.b64encode(der).decode()


class Issuer:
    def __init__(self, args):
        self.key = args.key
        self.issuer = args.issuer
        self.service = args.service
        self.expires_in = args.expires_in
        self.users = {}
        for u in args.user or []:
            name, sep, pw = u.partition(":")
            if not sep:
                raise SystemExit("--user wants user:password, got %r" % u)
            self.users[name] = pw
        self.private = [p.strip("/") for p in (args.private_prefix or [])]
        self.x5c = [cert_der_b64(args.cert)]
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.stats = {"requests": 0, "issued": 0, "unauthorized": 0, "bad_requests": 0,
                          "anonymous": 0, "authenticated": 0, "by_scope": {}, "by_user": {}, "log": []}

    def snapshot(self):
        with self.lock:
            return json.loads(json.dumps(self.stats))

    def is_private(self, name):
        return any(name == p or name.startswith(p + "/") for p in self.private)

    def grant(self, user, scope):
        """Parse one scope string and return the granted access entry (or None)."""
        parts = scope.split(":")
        if len(parts) < 3:
            return None
        typ, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
        if typ == "repository":
            allowed = {"pull", "push", "delete", "*"} if user else ({"pull"} if not self.is_private(name) else set())
        elif typ == "registry" and name == "catalog":
            allowed = {"*"} if user else set()
        else:
            allowed = set()
        granted = [a for a in actions if a in allowed]
        return {"type": typ, "name": name, "actions": granted}

    def sign(self, claims):
        header = {"typ": "JWT", "alg": "RS256", "x5c": self.x5c}
        signing_input = (b64url(json.dumps(header, separators=(",", ":")).encode()) + "." +
                         b64url(json.dumps(claims, separators=(",", ":")).encode()))
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key],
                             input=signing_input.encode(), check=True, stdout=subprocess.PIPE,
                             timeout=30).stdout
        return signing_input + "." + b64url(sig)

    def issue(self, user, scopes):
        now = int(time.time())
        access = []
        for s in scopes:
            for one in s.split(" "):
                if one:
                    g = self.grant(user, one)
                    if g is not None:
                        access.append(g)
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service, "exp": now + self.expires_in,
                  "nbf": now - 1, "iat": now, "jti": secrets.token_hex(16), "access": access}
        token = self.sign(claims)
        issued_at = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"token": token, "access_token": token, "expires_in": self.expires_in,
                "issued_at": issued_at}, access


class Handler(BaseHTTPRequestHandler):
    server_version = "cove-test-token-issuer/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("token_issuer: %s %s\n" % (self.address_string(), fmt % args))

    def send_json(self, status, obj, extra_headers=None):
        body = (json.dumps(obj) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def basic_credentials(self):
        h = self.headers.get("Authorization", "")
        if not h.lower().startswith("basic "):
            return None
        try:
            raw = base64.b64decode(h[6:].strip()).decode()
        except Exception:
            return ("", None)
        user, _, pw = raw.partition(":")
        return (user, pw)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        iss = self.server.issuer
        if url.path == "/healthz":
            return self.send_json(200, {"ok": True})
        if url.path == "/stats":
            return self.send_json(200, iss.snapshot())
        if url.path != "/token":
            return self.send_json(404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]})
        q = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        creds = self.basic_credentials()
        self.answer(q.get("service", [None])[0], q.get("scope", []), creds, "GET", q.get("account", [None])[0])

    def do_POST(self):
        url = urllib.parse.urlsplit(self.path)
        iss = self.server.issuer
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if url.path == "/reset":
            iss.reset()
            return self.send_json(200, {"ok": True})
        if url.path != "/token":
            return self.send_json(404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]})
        form = urllib.parse.parse_qs(body.decode(errors="replace"), keep_blank_values=True)
        grant = form.get("grant_type", [""])[0]
        if grant != "password":
            # We hand out no refresh tokens; a client must fall back to GET with Basic credentials.
            with iss.lock:
                iss.stats["requests"] += 1
                iss.stats["bad_requests"] += 1
            return self.send_json(400, {"error": "unsupported_grant_type"})
        creds = (form.get("username", [""])[0], form.get("password", [""])[0])
        scopes = []
        for s in form.get("scope", []):
            scopes.extend(s.split(" "))
        self.answer(form.get("service", [None])[0], scopes, creds, "POST", None)

    def answer(self, service, scopes, creds, method, account):
        iss = self.server.issuer
        entry = {"time": time.time(), "method": method, "service": service, "scopes": scopes,
                 "user": creds[0] if creds else None, "account": account}
        with iss.lock:
            iss.stats["requests"] += 1
        if service is not None and service != iss.service:
            with iss.lock:
                iss.stats["bad_requests"] += 1
                entry["result"] = "bad service"
                iss.stats["log"].append(entry)
            return self.send_json(400, {"errors": [{"code": "DENIED", "message":
                                                    "unknown service %r (want %r)" % (service, iss.service)}]})
        user = None
        if creds is not None:
            name, pw = creds
            if name not in iss.users or iss.users[name] != pw:
                with iss.lock:
                    iss.stats["unauthorized"] += 1
                    entry["result"] = "unauthorized"
                    iss.stats["log"].append(entry)
                return self.send_json(401, {"errors": [{"code": "UNAUTHORIZED",
                                                        "message": "invalid username or password"}]},
                                      {"WWW-Authenticate": 'Basic realm="cove-test-token-issuer"'})
            user = name
        resp, access = iss.issue(user, scopes)
        with iss.lock:
            st = iss.stats
            st["issued"] += 1
            st["authenticated" if user else "anonymous"] += 1
            st["by_user"][user or ""] = st["by_user"].get(user or "", 0) + 1
            for s in scopes:
                st["by_scope"][s] = st["by_scope"].get(s, 0) + 1
            entry["result"] = "issued"
            entry["access"] = access
            st["log"].append(entry)
            if len(st["log"]) > 1000:
                del st["log"][:-1000]
        self.send_json(200, resp)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--key", required=True, help="RSA private key (PEM); generated if missing")
    ap.add_argument("--cert", required=True, help="self-signed certificate (PEM); generated if missing")
    ap.add_argument("--issuer", default="cove-test-issuer")
    ap.add_argument("--service", default="cove-test-registry")
    ap.add_argument("--user", action="append", metavar="USER:PASSWORD")
    ap.add_argument("--private-prefix", action="append", metavar="PREFIX")
    ap.add_argument("--expires-in", type=int, default=300, metavar="SECONDS")
    ap.add_argument("--generate-only", action="store_true", help="create --key/--cert if missing, then exit")
    args = ap.parse_args()

    if not (os.path.exists(args.key) and os.path.exists(args.cert)):
        generate_key_and_cert(args.key, args.cert)
    if args.generate_only:
        return
    issuer = Issuer(args)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.issuer = issuer
    print("listening on 127.0.0.1:%d" % server.server_address[1], flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
