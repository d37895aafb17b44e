#!/usr/bin/env python3
"""Run a real upstream registry (Debian's `docker-registry`, distribution 2.8) on 127.0.0.1 for tests.

Usage:
  registry.py --mode plain    --port P --root DIR
  registry.py --mode token    --port P --root DIR --realm http://127.0.0.1:T/token --service S --issuer I \
                              --rootcertbundle CERT.pem
  registry.py --mode htpasswd --port P --root DIR --user alice:secret [--user ...]

Writes DIR/config.yml (and DIR/htpasswd in htpasswd mode, bcrypt via `htpasswd -Bbn`), keeps the blobs in
DIR/storage, then exec()s `docker-registry serve DIR/config.yml`: the process id stays the registry's, so
stopping this process stops the registry. `--print-config` writes the config and prints it instead.

Logging: the access log is on (Combined Log Format, one line per request on stdout), e.g.
  127.0.0.1 - - [29/Nov/2025:18:30:00 +0000] "GET /v2/single/manifests/v1 HTTP/1.1" 200 792 "" "skopeo/1.9.3"
so requests are counted by grepping stdout for `"METHOD /v2/...`. Application logs (level --log-level,
default info) go to stderr.
"""

import argparse
import os
import shutil
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["plain", "token", "htpasswd"], default="plain")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--root", required=True, help="directory for config.yml, htpasswd and storage/")
    ap.add_argument("--realm", help="token mode: the token issuer's URL")
    ap.add_argument("--service", default="cove-test-registry")
    ap.add_argument("--issuer", default="cove-test-issuer")
    ap.add_argument("--rootcertbundle", help="token mode: PEM certificate(s) that sign tokens")
    ap.add_argument("--user", action="append", metavar="USER:PASSWORD", help="htpasswd mode: account")
    ap.add_argument("--log-level", default="info", choices=["error", "warn", "info", "debug"])
    ap.add_argument("--registry-binary", default=os.environ.get("DOCKER_REGISTRY_BIN", "docker-registry"))
    ap.add_argument("--print-config", action="store_true")
    args = ap.parse_args()

    root = os.path.abspath(args.root)
    storage = os.path.join(root, "storage")
    os.makedirs(storage, exist_ok=True)

    lines = [
        "version: 0.1",
        "log:",
        "  level: %s" % args.log_level,
        "  formatter: text",
        "  accesslog:",
        "    disabled: false",
        "  fields:",
        "    service: cove-test-registry",
        "storage:",
        "  filesystem:",
        "    rootdirectory: %s" % storage,
        "  delete:",
        "    enabled: true",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "  redirect:",
        "    disable: true",
        "http:",
        "  addr: 127.0.0.1:%d" % args.port,
        "  secret: cove-integration-test-secret",
        "  headers:",
        "    X-Content-Type-Options: [nosniff]",
    ]
    if args.mode == "token":
        if not args.realm or not args.rootcertbundle:
            ap.error("--mode token needs --realm and --rootcertbundle")
        lines += [
            "auth:",
            "  token:",
            "    realm: %s" % args.realm,
            "    service: %s" % args.service,
            "    issuer: %s" % args.issuer,
            "    rootcertbundle: %s" % os.path.abspath(args.rootcertbundle),
        ]
    elif args.mode == "htpasswd":
        if not args.user:
            ap.error("--mode htpasswd needs at least one --user")
        entries = []
        for u in args.user:
            name, sep, pw = u.partition(":")
            if not sep:
                ap.error("--user wants user:password")
            out = subprocess.run(["htpasswd", "-Bbn", name, pw], check=True, stdout=subprocess.PIPE,
                                 timeout=60).stdout.decode().strip()
            entries.append(out)
        htpasswd = os.path.join(root, "htpasswd")
        with open(htpasswd, "w") as f:
            f.write("\n".join(entries) + "\n")
        lines += [
            "auth:",
            "  htpasswd:",
            "    realm: cove-test-basic-realm",
            "    path: %s" % htpasswd,
        ]
    config = os.path.join(root, "config.yml")
    with open(config, "w") as f:
        f.write("\n".join(lines) + "\n")
    if args.print_config:
        sys.stdout.write(open(config).read())
        return
    binary = shutil.which(args.registry_binary) or args.registry_binary
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(binary, [binary, "serve", config])


if __name__ == "__main__":
    main()
