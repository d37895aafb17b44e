#!/usr/bin/env python3
"""Cold single blob GET: Cove vs distribution 2.8 in proxy mode, same run (issue 11). Results: bench/RESULTS.md.

Everything on 127.0.0.1: the upstream is a plain distribution registry (Tests/IntegrationTests/Fixtures/registry.py)
holding one incompressible blob. Each round starts every contender on a fresh, empty storage directory, times one
`curl` GET of the blob through it (time to last byte, body discarded by curl), checks the size, stops it, then
`sync`s and pauses so one contender's write-back does not land on the next one's clock. The order of the
contenders rotates every round.

Contenders:
  dist       Debian's docker-registry with `proxy: {remoteurl: <upstream>}` and its own filesystem storage
  cove       Cove (release build), fill pipeline on (the default)
  cove-inline  the same binary with COVE_FILL_PIPELINE=0: receive, write and hash in series on the transfer thread
               (what Cove did before the pipeline), for a same-binary comparison

Usage: bench/cold_single.py [--size-mib 512] [--rounds 3] [--cove .build/release/cove] [--only dist,cove]
       [--perf DIR]   (records `perf record -g` of Cove's first pipelined GET into DIR/perf.data)
"""
import argparse, hashlib, os, shutil, statistics, subprocess, sys, tempfile, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Proc, free_port, peak_rss_mib, wait_http  # noqa: E402


class EnvProc(Proc):
    """`Proc` with an environment of its own."""
    def __init__(self, args, log, env):
        self.log = open(log, "w")
        self.p = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def curl_get(url):
    """One GET; returns (seconds to last byte, bytes)."""
    out = subprocess.run(["curl", "-s", "-f", "-w", "%{time_total} %{size_download}", "-o", "/dev/null", url],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"curl {url} failed with {out.returncode}")
    t, n = out.stdout.split()
    return float(t), int(n)


def push_blob(upstream, path, digest):
    loc = subprocess.run(["curl", "-s", "-D", "-", "-o", "/dev/null", "-X", "POST", upstream + "/v2/bench/blob/blobs/uploads/"],
                         capture_output=True, text=True).stdout
    location = [l.split(":", 1)[1].strip() for l in loc.splitlines() if l.lower().startswith("location:")][0]
    if location.startswith("/"):
        location = upstream + location
    sep = "&" if "?" in location else "?"
    subprocess.run(["curl", "-s", "-f", "-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary", "@" + path,
                    f"{location}{sep}digest={digest}"], check=True, capture_output=True)


def upstream_with_blob(work, size):
    """Starts a plain distribution upstream (the integration tests' fixture) under `work` holding one random blob of
    `size` bytes in `bench/blob`; returns (process, upstream URL, digest)."""
    blob = os.path.join(work, "blob")
    h = hashlib.sha256()
    with open(blob, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 8 << 20)); f.write(chunk); h.update(chunk); left -= len(chunk)
    digest = "sha256:" + h.hexdigest()
    reg_port = free_port()
    reg = Proc([sys.executable, os.path.join(ROOT, "Tests/IntegrationTests/Fixtures/registry.py"), "--mode", "plain",
                "--log-level", "error", "--port", str(reg_port), "--root", os.path.join(work, "registry")],
               os.path.join(work, "registry.log"))
    upstream = f"http://127.0.0.1:{reg_port}"
    wait_http(upstream + "/v2/")
    push_blob(upstream, blob, digest)
    os.unlink(blob)
    return reg, upstream, digest


def start_dist_proxy(storage, port, upstream, log):
    """Starts Debian's docker-registry 2.8 as a pull-through cache (`proxy: remoteurl:`) of `upstream` on
    127.0.0.1:`port`, storing under `storage` (created), access log off."""
    os.makedirs(storage)
    conf = os.path.join(storage, "config.yml")
    with open(conf, "w") as f:
        f.write(f"""version: 0.1
log: {{level: error, accesslog: {{disabled: true}}}}
storage:
  filesystem: {{rootdirectory: {storage}/data}}
  redirect: {{disable: true}}
http: {{addr: "127.0.0.1:{port}", secret: bench-secret}}
proxy: {{remoteurl: "{upstream}"}}
""")
    return Proc(["docker-registry", "serve", conf], log)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cove", default=os.path.join(ROOT, ".build/release/cove"))
    ap.add_argument("--only", default="dist,cove,cove-inline")
    ap.add_argument("--perf", default=None, help="directory for perf.data of Cove's first pipelined GET")
    args = ap.parse_args()
    contenders = args.only.split(",")
    work = tempfile.mkdtemp(prefix="cove-cold-")
    procs = []
    try:
        size = args.size_mib << 20
        reg, upstream, digest = upstream_with_blob(work, size)
        procs.append(reg)
        path = f"/v2/bench/blob/blobs/{digest}"
        curl_get(upstream + path)  # the upstream's copy in the page cache for everyone

        def start(name, rnd):
            storage = os.path.join(work, f"{name}-{rnd}")
            port = free_port()
            if name == "dist":
                p = start_dist_proxy(storage, port, upstream, os.path.join(work, f"{name}-{rnd}.log"))
            else:
                env = dict(os.environ)
                if name == "cove-inline":
                    env["COVE_FILL_PIPELINE"] = "0"
                p = EnvProc([args.cove, "serve", "--listen", f"127.0.0.1:{port}", "--storage", storage,
                          "--upstream", upstream, "--log-level", "warning"], os.path.join(work, f"{name}-{rnd}.log"), env=env)
            wait_http(f"http://127.0.0.1:{port}/v2/")
            return p, storage, f"http://127.0.0.1:{port}{path}"

        results = {c: [] for c in contenders}
        rss = {c: [] for c in contenders}
        loads = []
        perf_done = False
        for rnd in range(args.rounds):
            order = contenders[rnd % len(contenders):] + contenders[:rnd % len(contenders)]
            for name in order:
                p, storage, url = start(name, rnd)
                perf = None
                if args.perf and name == "cove" and not perf_done:
                    os.makedirs(args.perf, exist_ok=True)
                    perf = subprocess.Popen(["perf", "record", "-g", "-F", "999", "-o", os.path.join(args.perf, "perf.data"),
                                             "-p", str(p.p.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(1)
                load = os.getloadavg()[0]
                t, n = curl_get(url)
                if perf:
                    perf.send_signal(2); perf.wait(); perf_done = True
                assert n == size, (name, n)
                if name != "dist":
                    rss[name].append(peak_rss_mib(p.p.pid))
                p.stop()
                shutil.rmtree(storage, ignore_errors=True)
                subprocess.run(["sync"]); time.sleep(1)
                results[name].append(t)
                loads.append(load)
                print(f"round {rnd + 1} {name:12s} {t:6.3f} s  {size / t / 1e9:5.2f} GB/s  load {load:.1f}"
                      + (f"  rss {rss[name][-1]:.0f} MiB" if name != "dist" else ""), flush=True)

        print(f"\n{args.size_mib} MiB blob, {args.rounds} rounds, load average during GETs {min(loads):.1f}-{max(loads):.1f}")
        print("| contender | median s (GB/s) | min-max s | peak RSS MiB |")
        print("|---|---|---|---|")
        for c in contenders:
            ts = results[c]
            med = statistics.median(ts)
            r = f"{min(rss[c]):.0f}-{max(rss[c]):.0f}" if rss[c] else "-"
            print(f"| {c} | {med:.3f} ({size / med / 1e9:.2f}) | {min(ts):.3f}-{max(ts):.3f} | {r} |")
        if "dist" in results:
            d = statistics.median(results["dist"])
            for c in contenders:
                if c != "dist":
                    ratios = [a / b for a, b in zip(results["dist"], results[c])]
                    print(f"{c} vs dist (speed ratio, median of per-round ratios): {statistics.median(ratios):.2f}x "
                          f"(min {min(ratios):.2f}, max {max(ratios):.2f}); ratio of medians {d / statistics.median(results[c]):.2f}x")
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(work, ignore_errors=True) if not os.environ.get("KEEP") else print(work)


if __name__ == "__main__":
    main()
