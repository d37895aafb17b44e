#!/usr/bin/env python3
"""Manifest hit benchmark (issue 11): requests/s and p99 of cached manifest GETs at 64 connections.

Run by hand (needs `wrk`, `nginx` and Debian's `docker-registry`; `apt-get install -y wrk`); results go to
bench/RESULTS.md. Everything runs on 127.0.0.1:
  - upstream: a real distribution registry (Tests/IntegrationTests/Fixtures/registry.py) holding one small
    image (config, one layer, an OCI image manifest tagged `v1`);
  - Cove (release build) in front of it, access log on at `info` (stderr to a file), default `tag_ttl` (5 m);
  - distribution 2.8 in `proxy:` mode (`docker-registry`, `proxy: remoteurl:`) in front of the same upstream,
    its access log on as well;
  - nginx serving the manifest file as a static file (at the digest and the tag path; access log off), the
    machine's reference for "answering a small file over loopback".
Each server is warmed (one GET by digest and by tag), then `wrk -c 64 -t 2 -d 10s --latency` measures, for each
server in turn: manifest by digest, manifest by tag (within Cove's TTL; distribution's proxy asks its upstream
for every tag GET). Runs alternate between servers so they share the machine's noise; the table gives medians of
the runs with min and max, Cove's figure against each peer as a ratio, and Cove's peak RSS (VmHWM).

Usage: bench/manifests.py [--runs 3] [--duration 10] [--cove [LABEL=]PATH ...] [--out bench/RESULTS.md]
Several `--cove` binaries (e.g. before=/tmp/cove-before after=.build/release/cove) are measured in the same run.
"""
import argparse, hashlib, json, os, platform, re, shutil, signal, statistics, subprocess, sys, tempfile, time
import urllib.request
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Proc, free_port, peak_rss_mib, wait_http  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACCEPT = ("application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json,"
          "application/vnd.docker.distribution.manifest.v2+json,application/vnd.docker.distribution.manifest.list.v2+json")


def http(method, url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, dict(r.headers), r.read()


def push_blob(upstream, repo, data):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    _, headers, _ = http("POST", f"{upstream}/v2/{repo}/blobs/uploads/")
    location = headers["Location"]
    if location.startswith("/"):
        location = upstream + location
    sep = "&" if "?" in location else "?"
    http("PUT", f"{location}{sep}digest={digest}", data, {"Content-Type": "application/octet-stream"})
    return digest


def push_image(upstream, repo, tag):
    """A small OCI image: config, one 1 KiB layer, the manifest under `tag`. Returns (digest, manifest bytes)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = os.urandom(1024)
    cd, ld = push_blob(upstream, repo, config), push_blob(upstream, repo, layer)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": len(layer)}],
    }, indent=3).encode()
    http("PUT", f"{upstream}/v2/{repo}/manifests/{tag}", manifest, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    return "sha256:" + hashlib.sha256(manifest).hexdigest(), manifest


def wrk(url, duration, connections=64, threads=2):
    """Runs wrk; returns (requests/s, p99 ms). Exits when any answer was not 2xx/3xx or a socket error occurred."""
    out = subprocess.run(["wrk", "-c", str(connections), "-t", str(threads), "-d", f"{duration}s", "--latency",
                          "-H", f"Accept: {ACCEPT}", url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk against {url} saw errors:\n{out}")
    return rps, p99


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def summary(values):
    return statistics.median(values), min(values), max(values)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    ap.add_argument("--cove", action="append", help="[LABEL=]PATH of a cove binary (repeatable)")
    ap.add_argument("--out", default=None, help="append a results section to this Markdown file")
    args = ap.parse_args()
    coves = []
    for spec in args.cove or [os.path.join(ROOT, ".build/release/cove")]:
        label, _, path = spec.rpartition("=")
        coves.append((label or "cove", os.path.abspath(path)))
    work = tempfile.mkdtemp(prefix="cove-mbench-")
    procs = []
    try:
        reg_port = free_port()
        reg = Proc([sys.executable, os.path.join(ROOT, "Tests/IntegrationTests/Fixtures/registry.py"), "--mode", "plain",
                    "--port", str(reg_port), "--root", os.path.join(work, "registry")], os.path.join(work, "registry.log"))
        procs.append(reg)
        upstream = f"http://127.0.0.1:{reg_port}"
        wait_http(upstream + "/v2/")
        repo, tag = "bench/small", "v1"
        digest, manifest = push_image(upstream, repo, tag)

        # distribution 2.8 as a pull-through cache of the same upstream
        dist_port = free_port()
        dist_root = os.path.join(work, "dist"); os.makedirs(dist_root)
        with open(os.path.join(dist_root, "config.yml"), "w") as f:
            f.write(f"""version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {dist_root}/storage
  maintenance:
    uploadpurging:
      enabled: false
  redirect:
    disable: true
http:
  addr: 127.0.0.1:{dist_port}
  secret: cove-bench-secret
proxy:
  remoteurl: {upstream}
""")
        procs.append(Proc(["docker-registry", "serve", os.path.join(dist_root, "config.yml")], os.path.join(work, "dist.log")))
        wait_http(f"http://127.0.0.1:{dist_port}/v2/")

        # nginx: the manifest bytes as a static file, under the digest path and the tag path
        ngx_port = free_port()
        ngx_root = os.path.join(work, "nginx")
        os.makedirs(os.path.join(ngx_root, "v2", repo, "manifests"))
        for name in (digest, tag):
            with open(os.path.join(ngx_root, "v2", repo, "manifests", name), "wb") as f:
                f.write(manifest)
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes auto; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; tcp_nopush on; default_type application/vnd.oci.image.manifest.v1+json;
  client_body_temp_path {work}/ngx_body; proxy_temp_path {work}/ngx_proxy; fastcgi_temp_path {work}/ngx_fcgi;
  uwsgi_temp_path {work}/ngx_uwsgi; scgi_temp_path {work}/ngx_scgi;
  server {{ listen 127.0.0.1:{ngx_port}; root {ngx_root}; }} }}
""")
        procs.append(Proc(["nginx", "-c", conf, "-g", "daemon off;" + (" user root;" if os.geteuid() == 0 else "")],
                          os.path.join(work, "nginx.log")))
        wait_http(f"http://127.0.0.1:{ngx_port}/")

        servers = {}  # label -> base URL
        cove_procs = {}
        for label, path in coves:
            port = free_port()
            p = Proc([path, "serve", "--listen", f"127.0.0.1:{port}", "--storage", os.path.join(work, "cove-" + label),
                      "--upstream", upstream, "--log-level", "info"], os.path.join(work, f"cove-{label}.log"))
            procs.append(p)
            cove_procs[label] = p
            servers[label] = f"http://127.0.0.1:{port}"
            wait_http(servers[label] + "/v2/")
        servers["distribution"] = f"http://127.0.0.1:{dist_port}"
        servers["nginx"] = f"http://127.0.0.1:{ngx_port}"

        paths = {"digest": f"/v2/{repo}/manifests/{digest}", "tag": f"/v2/{repo}/manifests/{tag}"}
        for base in servers.values():  # warm every cache; check every server answers the same bytes
            for path in paths.values():
                _, _, body = http("GET", base + path, headers={"Accept": ACCEPT})
                assert body == manifest, f"{base}{path} answered other bytes"

        results = {}  # (server, kind) -> [(rps, p99)]
        loads = [loadavg()]
        for run in range(args.runs):
            for kind, path in paths.items():
                for name, base in servers.items():
                    results.setdefault((name, kind), []).append(wrk(base + path, args.duration))
                    print(f"run {run + 1} {kind:6} {name:12} {results[(name, kind)][-1][0]:>10,.0f} req/s  "
                          f"p99 {results[(name, kind)][-1][1]:.2f} ms", file=sys.stderr)
            loads.append(loadavg())
        rss = {label: peak_rss_mib(cove_procs[label].p.pid) for label in cove_procs}

        def cell(name, kind):
            (rps, lo, hi) = summary([r for r, _ in results[(name, kind)]])
            p99 = statistics.median([p for _, p in results[(name, kind)]])
            return rps, f"{rps:,.0f} ({lo:,.0f}–{hi:,.0f}), p99 {p99:.1f} ms"

        lines = [
            f"### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — manifest hits, 64 connections, "
            f"{args.runs} × {args.duration} s per cell",
            f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}; manifest {len(manifest)} bytes; "
            f"load average (1/5/15 min) before and after each run: {' → '.join(loads)}",
            "",
            "| row | Cove | req/s median (min–max), p99 | peer | req/s median (min–max), p99 | ratio (medians) | Cove peak RSS |",
            "|---|---|---|---|---|---|---|",
        ]
        for kind in paths:
            for peer in ("distribution", "nginx"):
                for label in cove_procs:
                    c, ctext = cell(label, kind)
                    p, ptext = cell(peer, kind)
                    lines.append(f"| manifest by {kind} | {label} | {ctext} | {peer} | {ptext} | **{c / p:.2f}×** | {rss[label]:.0f} MiB |")
        lines.append("")
        text = "\n".join(lines)
        print(text)
        if args.out:
            with open(args.out, "a") as f:
                f.write(text + "\n")
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(work, ignore_errors=True) if not os.environ.get("KEEP") else print(work, file=sys.stderr)


if __name__ == "__main__":
    main()
