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
import argparse, os, platform, shutil, statistics, sys, tempfile, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (ACCEPT, ROOT, Proc, RegistryClient, free_port, http, loadavg, peak_rss_mib,  # noqa: E402
                      push_image, start_distribution, start_nginx, summary, wait_http, wrk)


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
        digest, manifest, _, _ = push_image(RegistryClient(upstream), repo, tag)

        # distribution 2.8 as a pull-through cache of the same upstream
        dist, dist_url = start_distribution(os.path.join(work, "dist"), upstream, os.path.join(work, "dist.log"))
        procs.append(dist)

        # nginx: the manifest bytes as a static file, under the digest path and the tag path
        ngx_root = os.path.join(work, "nginx")
        os.makedirs(os.path.join(ngx_root, "v2", repo, "manifests"))
        for name in (digest, tag):
            with open(os.path.join(ngx_root, "v2", repo, "manifests", name), "wb") as f:
                f.write(manifest)
        ngx, ngx_url = start_nginx(work, ngx_root, default_type="application/vnd.oci.image.manifest.v1+json")
        procs.append(ngx)

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
        servers["distribution"] = dist_url
        servers["nginx"] = ngx_url

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
