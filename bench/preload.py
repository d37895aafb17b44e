#!/usr/bin/env python3
"""`cove preload` throughput vs `skopeo sync` (issue 9). Run by hand on a quiet machine; results go to
bench/RESULTS.md.

Everything runs on 127.0.0.1: a real distribution registry (Debian's docker-registry, via
Tests/IntegrationTests/Fixtures/registry.py) holding one image whose single layer is SIZE MiB of incompressible
data (Tests/IntegrationTests/Fixtures/make_images.py --blob-size), pushed with skopeo. Then, alternately, each
into a fresh directory:
  cove   `cove preload --storage DIR --upstream URL big:v1` (in-process: fetch, verify, fsync, commit, pin)
  skopeo `skopeo sync --src docker --dest dir 127.0.0.1:PORT/big:v1 DIR` (fetch, verify, write)
Wall time from exec to exit; throughput = layer bytes / wall time.
Usage: bench/preload.py [--size-mib 512] [--runs 3] [--cove .build/release/cove] [--out bench/RESULTS.md]
"""
import argparse, json, os, platform, shutil, signal, socket, subprocess, sys, tempfile, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import free_port, wait_http  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "Tests/IntegrationTests/Fixtures")


def timed(args, env=None):
    start = time.time()
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=1800)
    wall = time.time() - start
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return wall, r.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cove", default=os.path.join(ROOT, ".build/release/cove"))
    ap.add_argument("--out", default=None, help="append a results section to this Markdown file")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="cove-bench-preload-")
    reg = None
    try:
        made = subprocess.run([sys.executable, os.path.join(FIXTURES, "make_images.py"), os.path.join(work, "images"),
                               "--blob-size", str(args.size_mib << 20)], capture_output=True, text=True, check=True)
        big = json.loads(made.stdout)["big"]
        layer = max(big["blobs"], key=lambda b: b["size"])
        total = sum(b["size"] for b in big["blobs"]) + big["size"]
        port = free_port()
        log = open(os.path.join(work, "registry.log"), "w")
        reg = subprocess.Popen([sys.executable, os.path.join(FIXTURES, "registry.py"), "--mode", "plain", "--port", str(port),
                                "--root", os.path.join(work, "registry")], stdout=log, stderr=subprocess.STDOUT)
        upstream = f"http://127.0.0.1:{port}"
        wait_http(upstream + "/v2/")
        auth = os.path.join(work, "auth.json")
        env = dict(os.environ, REGISTRY_AUTH_FILE=auth)
        subprocess.run(["skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false", f"oci:{big['layout']}:v1",
                        f"docker://127.0.0.1:{port}/big:v1"], check=True, capture_output=True, env=env)
        rows = []
        for run in range(1, args.runs + 1):
            for tool in ("cove", "skopeo"):
                dest = os.path.join(work, f"{tool}-{run}")
                if tool == "cove":
                    wall, out = timed([args.cove, "preload", "--storage", dest, "--upstream", upstream, "--log-level", "warning", "big:v1"])
                    last = out.strip().splitlines()[-1]
                else:
                    wall, out = timed(["skopeo", "sync", "--src", "docker", "--dest", "dir", "--src-tls-verify=false",
                                       f"127.0.0.1:{port}/big:v1", dest], env=env)
                    last = ""
                mibs = total / wall / (1 << 20)
                rows.append((run, tool, wall, mibs))
                print(f"run {run} {tool:6} {wall:7.2f} s  {mibs:7.1f} MiB/s  {last}", flush=True)
                shutil.rmtree(dest, ignore_errors=True)
        if args.out:
            by = {t: [r for r in rows if r[1] == t] for t in ("cove", "skopeo")}
            best = {t: min(by[t], key=lambda r: r[2]) for t in by}
            with open(args.out, "a") as f:
                f.write(f"\n## {time.strftime('%Y-%m-%d')}, preload of a {args.size_mib} MiB image: `cove preload` vs `skopeo sync` (bench/preload.py)\n\n")
                f.write(f"{platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}; `{os.path.relpath(args.cove, ROOT)}`; "
                        f"one image (config + one {layer['size']:,}-byte layer of incompressible data), {total:,} bytes in all, "
                        "from a local distribution 2.8 registry over loopback, each run into a fresh directory.\n\n")
                f.write("| run | tool | wall time | throughput |\n|---|---|---|---|\n")
                for run, tool, wall, mibs in rows:
                    f.write(f"| {run} | {tool} | {wall:.2f} s | {mibs:,.0f} MiB/s ({mibs * 1.048576:,.0f} MB/s) |\n")
                f.write(f"\nBest: cove {best['cove'][3]:,.0f} MiB/s, skopeo {best['skopeo'][3]:,.0f} MiB/s "
                        f"(cove/skopeo {best['cove'][3] / best['skopeo'][3]:.2f}x).\n")
    finally:
        if reg and reg.poll() is None:
            reg.send_signal(signal.SIGTERM)
            try:
                reg.wait(10)
            except subprocess.TimeoutExpired:
                reg.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
