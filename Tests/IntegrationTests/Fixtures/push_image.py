#!/usr/bin/env python3
"""Push one tagged image from an OCI image layout to a registry byte-exact, with the registry HTTP API.

Usage: push_image.py LAYOUT REGISTRY_URL REPOSITORY [--tag v1] [--as-tag T] [--user USER:PASSWORD] [--timeout SECONDS]
  e.g. push_image.py /tmp/x/dockerlist http://127.0.0.1:5000 dockerlist --tag v1

Why: skopeo 1.9 reads an OCI layout's index.json only for OCI media types (a Docker manifest list there gives
"no descriptor found for reference"), and converting is not byte-exact. This pushes any media type as is:
every blob with a monolithic upload (POST /v2/NAME/blobs/uploads/, then PUT <location>&digest=D), child
manifests by digest, then the top manifest by tag, each with its descriptor's media type as Content-Type.
Auth: on 401 it follows the WWW-Authenticate challenge, Basic (send --user) or Bearer (fetch a token from the
realm with service/scope, sending --user as Basic when given). Python 3 standard library only.
Prints the top manifest's digest as the registry reported it.
"""

import argparse
import base64
import hashlib
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
INDEX_TYPES = {"application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json"}


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


def parse_challenge(header):
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class Client:
    def __init__(self, base, repo, user, timeout):
        self.base = base.rstrip("/")
        self.repo = repo
        self.user = user
        self.timeout = timeout
        self.auth = None
        self.opener = urllib.request.build_opener(NoRedirect)

    def basic(self):
        return "Basic " + base64.b64encode(self.user.encode()).decode()

    def authenticate(self, challenge):
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self.user:
                raise SystemExit("registry wants Basic credentials; pass --user")
            self.auth = self.basic()
            return
        if scheme != "bearer":
            raise SystemExit("unsupported challenge: %s" % challenge)
        q = {"service": params.get("service", "")}
        scope = "repository:%s:pull,push" % self.repo
        url = params["realm"] + "?" + urllib.parse.urlencode(q) + "&scope=" + urllib.parse.quote(scope, safe=":/,")
        req = urllib.request.Request(url)
        if self.user:
            req.add_header("Authorization", self.basic())
        with self.opener.open(req, timeout=self.timeout) as r:
            body = json.load(r)
        self.auth = "Bearer " + (body.get("token") or body.get("access_token"))

    def request(self, method, url, data=None, headers=None, retry=True):
        if not url.startswith("http"):
            url = self.base + url
        req = urllib.request.Request(url, data=data, method=method)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        if self.auth:
            req.add_header("Authorization", self.auth)
        try:
            r = self.opener.open(req, timeout=self.timeout)
            body = r.read()
            return r.status, r.headers, body
        except urllib.error.HTTPError as e:
            body = e.read()
            if e.code == 401 and retry and e.headers.get("WWW-Authenticate"):
                self.authenticate(e.headers["WWW-Authenticate"])
                return self.request(method, url, data, headers, retry=False)
            return e.code, e.headers, body


def push_blob(c, layout, desc):
    digest = desc["digest"]
    st, _, _ = c.request("HEAD", "/v2/%s/blobs/%s" % (c.repo, digest))
    if st == 200:
        return
    with open(os.path.join(layout, "blobs", "sha256", digest.split(":", 1)[1]), "rb") as f:
        data = f.read()
    st, h, body = c.request("POST", "/v2/%s/blobs/uploads/" % c.repo, data=b"",
                            headers={"Content-Length": "0"})
    if st != 202:
        raise SystemExit("POST upload for %s: %d %s" % (digest, st, body[:300]))
    loc = urllib.parse.urljoin(c.base + "/", h["Location"])
    loc += ("&" if "?" in loc else "?") + "digest=" + urllib.parse.quote(digest)
    st, h, body = c.request("PUT", loc, data=data, headers={"Content-Type": "application/octet-stream",
                                                          "Content-Length": str(len(data))})
    if st != 201:
        raise SystemExit("PUT blob %s: %d %s" % (digest, st, body[:300]))


def push_manifest(c, layout, desc, reference):
    with open(os.path.join(layout, "blobs", "sha256", desc["digest"].split(":", 1)[1]), "rb") as f:
        data = f.read()
    if "sha256:" + hashlib.sha256(data).hexdigest() != desc["digest"]:
        raise SystemExit("layout blob %s does not match its digest" % desc["digest"])
    st, h, body = c.request("PUT", "/v2/%s/manifests/%s" % (c.repo, reference), data=data,
                            headers={"Content-Type": desc["mediaType"]})
    if st != 201:
        raise SystemExit("PUT manifest %s: %d %s" % (reference, st, body[:500]))
    got = h.get("Docker-Content-Digest")
    if got and got != desc["digest"]:
        raise SystemExit("registry computed %s for manifest %s" % (got, desc["digest"]))
    return got or desc["digest"]


def push_tree(c, layout, desc, reference):
    with open(os.path.join(layout, "blobs", "sha256", desc["digest"].split(":", 1)[1]), "rb") as f:
        manifest = json.load(f)
    if desc["mediaType"] in INDEX_TYPES:
        for child in manifest.get("manifests", []):
            push_tree(c, layout, child, child["digest"])
    else:
        for b in [manifest["config"]] + manifest.get("layers", []):
            push_blob(c, layout, b)
    return push_manifest(c, layout, desc, reference)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("layout")
    ap.add_argument("registry", help="e.g. http://127.0.0.1:5000")
    ap.add_argument("repository")
    ap.add_argument("--tag", default="v1", help="the layout's ref name to push")
    ap.add_argument("--as-tag", default=None, help="the tag to push it as (default: --tag)")
    ap.add_argument("--user", default=None, metavar="USER:PASSWORD")
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()
    with open(os.path.join(args.layout, "index.json")) as f:
        index = json.load(f)
    top = [m for m in index["manifests"]
           if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == args.tag]
    if len(top) != 1:
        raise SystemExit("layout has %d descriptors tagged %r" % (len(top), args.tag))
    if top[0]["mediaType"] not in MANIFEST_TYPES:
        raise SystemExit("unsupported media type %s" % top[0]["mediaType"])
    c = Client(args.registry, args.repository, args.user, args.timeout)
    print(push_tree(c, args.layout, top[0], args.as_tag or args.tag))


if __name__ == "__main__":
    main()
