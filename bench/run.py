#!/usr/bin/env python3
"""Issue 11's judge: Cove against distribution 2.8 in `proxy:` mode and against nginx, in the same run.

Everything runs on 127.0.0.1 (run by hand; results go to bench/RESULTS.md):
  - upstream: a real distribution registry (Tests/IntegrationTests/Fixtures/registry.py, `--mode token`) with
    token auth on a token realm on another port (Fixtures/token_issuer.py; anonymous pulls get a token), behind
    bench/cdn_front.py: blob GETs are answered `307` to a "CDN" on a third port that serves the registry's stored
    bytes (Range support, sendfile), like Docker Hub. The upstream holds one image, `bench/blob:v1`: a config and
    one incompressible layer of --size-mib MiB. Upstream fetches and bytes are counted from the front's and the
    CDN's log (one line per finished response, with the body bytes sent);
  - Cove (release build), access log on at `info`;
  - distribution 2.8 (Debian's `docker-registry`) with `proxy: remoteurl:` and its own storage, in front of the
    same upstream (no credentials needed: anonymous tokens);
  - nginx (sendfile on) serving the same blob file (a hard link of the registry's copy) and the manifest bytes.
Clients are curl processes writing to /dev/null, and `wrk` for manifests (benchlib.wrk_run, shared with
bench/manifests.py).

Each run measures every row for every server, alternating which server goes first, so both share the machine's
noise; "cold" rows start each server on a fresh cache. Rows (--only picks some, comma-separated):
  bytes          upstream bytes for one cold pull (manifest by tag, config, layer), in blob sizes
  cold-single    the same cold pull's layer GET, GB/s (10^9 bytes/s)
  cold-parallel  --parallel concurrent cold GETs of the layer: aggregate GB/s, upstream blob fetches
  warm           --parallel concurrent warm GETs: aggregate GB/s (Cove vs nginx; distribution for information)
  manifests      manifest hit by digest and by tag (within Cove's tag TTL), 64 connections, req/s and p99
Cove's peak RSS (VmHWM, reset through /proc/PID/clear_refs before each phase) is reported per phase against
256 MiB, with the largest RssAnon and RssFile sampled every 50 ms (heap or mapped file pages). The table gives medians of the runs with min and max, and the ratio of the medians (with the min and
max of the per-run ratios). The load average is printed at the start, after each run and at the end.

Usage: bench/run.py [--size-mib 600] [--runs 3] [--parallel 32] [--duration 10] [--cove PATH]
                    [--only bytes,cold-single,cold-parallel,warm,manifests] [--out bench/RESULTS.md]
Needs wrk, nginx, docker-registry, curl, openssl (Debian: apt-get install -y wrk nginx docker-registry).
KEEP=1 keeps the work directory (logs) and prints its path.
"""
import argparse, hashlib, json, os, platform, shutil, signal, statistics, subprocess, sys, tempfile, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (ACCEPT, FIXTURES, ROOT, Proc, RegistryClient, free_port, loadavg, peak_rss_mib,  # noqa: E402
                      RssSampler, push_image, reset_peak, require_tools, start_distribution, start_nginx, summary, wait_up,
                      wrk_run)

ROWS = ("bytes", "cold-single", "cold-parallel", "warm", "manifests")
REPO, TAG = "bench/blob", "v1"
RSS_LIMIT_MIB = 256
CURL_MAX_S = "900"
CHILDREN = set()  # curl processes in flight, killed if the run is aborted


def curl(url, accept=None):
    """One GET to /dev/null; returns (seconds, bytes) as curl measured them. Exits on a non-2xx answer."""
    args = ["curl", "-s", "-f", "-L", "--max-time", CURL_MAX_S, "-w", "%{time_total} %{size_download}", "-o", "/dev/null"]
    if accept:
        args += ["-H", f"Accept: {accept}"]
    p = subprocess.Popen(args + [url], stdout=subprocess.PIPE, text=True)
    CHILDREN.add(p)
    out, _ = p.communicate()
    CHILDREN.discard(p)
    if p.returncode != 0:
        raise SystemExit(f"curl {url} failed with exit status {p.returncode}")
    t, n = out.split()
    return float(t), int(n)


def parallel_gets(url, n):
    """`n` concurrent GETs; returns (seconds from the first start to the last byte, [bytes per client])."""
    start = time.monotonic()
    procs = [subprocess.Popen(["curl", "-s", "-f", "--max-time", CURL_MAX_S, "-w", "%{size_download}", "-o", "/dev/null", url],
                              stdout=subprocess.PIPE, text=True) for _ in range(n)]
    CHILDREN.update(procs)
    sizes = []
    for p in procs:
        out, _ = p.communicate()
        CHILDREN.discard(p)
        if p.returncode != 0:
            raise SystemExit(f"parallel curl {url} failed with exit status {p.returncode}")
        sizes.append(int(out))
    return time.monotonic() - start, sizes


def sha256_of(url):
    h = hashlib.sha256()
    with subprocess.Popen(["curl", "-s", "-f", "--max-time", CURL_MAX_S, url], stdout=subprocess.PIPE) as p:
        CHILDREN.add(p)
        for chunk in iter(lambda: p.stdout.read(1 << 20), b""):
            h.update(chunk)
        CHILDREN.discard(p)
    return "sha256:" + h.hexdigest()


class Upstream:
    """Token issuer + registry (token auth) + cdn_front.py, with the layer blob pushed."""

    def __init__(self, work, procs, blob):
        self.work, self.log = work, os.path.join(work, "front.log")
        key, cert = os.path.join(work, "token/key.pem"), os.path.join(work, "token/cert.pem")
        issuer = os.path.join(FIXTURES, "token_issuer.py")
        subprocess.run([sys.executable, issuer, "--key", key, "--cert", cert, "--generate-only"], check=True, timeout=120)
        iport = free_port()
        p = Proc([sys.executable, issuer, "--port", str(iport), "--key", key, "--cert", cert, "--issuer", "bench-issuer",
                  "--service", "bench-registry", "--user", "bench:bench-pw"], os.path.join(work, "issuer.log"))
        procs.append(p)
        wait_up(p, f"http://127.0.0.1:{iport}/healthz")
        rport, root = free_port(), os.path.join(work, "registry")
        p = Proc([sys.executable, os.path.join(FIXTURES, "registry.py"), "--mode", "token", "--port", str(rport), "--root", root,
                  "--realm", f"http://127.0.0.1:{iport}/token", "--service", "bench-registry", "--issuer", "bench-issuer",
                  "--rootcertbundle", cert], os.path.join(work, "registry.log"))
        procs.append(p)
        registry = f"http://127.0.0.1:{rport}"
        wait_up(p, registry + "/v2/")
        fport, cport = free_port(), free_port()
        p = Proc([sys.executable, os.path.join(ROOT, "bench/cdn_front.py"), "--front-port", str(fport), "--cdn-port", str(cport),
                  "--registry", registry, "--storage", os.path.join(root, "storage")], self.log)
        procs.append(p)
        self.url, self.cdn = f"http://127.0.0.1:{fport}", f"http://127.0.0.1:{cport}"
        wait_up(p, self.url + "/v2/")
        self.digest, self.manifest, self.layer, self.size = push_image(
            RegistryClient(registry, "bench", "bench-pw"), REPO, TAG, blob)
        self.stored = os.path.join(root, "storage/docker/registry/v2/blobs/sha256", self.layer[7:9], self.layer[7:], "data")

    def mark(self):
        return os.path.getsize(self.log)

    def since(self, offset):
        """[(server, method, path, status, bytes)] of the responses the front and the CDN finished after `offset`."""
        with open(self.log, "rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()
        out = []
        for line in lines:
            parts = line.split()
            if len(parts) == 5 and parts[0] in ("FRONT", "CDN"):
                out.append((parts[0], parts[1], parts[2], int(parts[3]), int(parts[4])))
        return out

    def wait_idle(self, timeout=300):
        """Waits until the CDN has no transfer in flight and the log stayed still for a second (a proxy may go on
        fetching after its client finished)."""
        deadline = time.monotonic() + timeout
        last, still = -1, time.monotonic()
        while time.monotonic() < deadline:
            active = subprocess.run(["curl", "-s", "--max-time", "5", self.cdn + "/_active"], capture_output=True, text=True).stdout.strip()
            size = self.mark()
            if size != last:
                last, still = size, time.monotonic()
            elif active == "0" and time.monotonic() - still >= 1.0:
                return
            time.sleep(0.2)
        print(f"warning: upstream still busy after {timeout} s", file=sys.stderr)

    def usage(self, offset):
        """(upstream body bytes, layer blob fetches from the CDN) since `offset`."""
        rows = self.since(offset)
        fetches = sum(1 for s, m, path, st, _ in rows if s == "CDN" and m == "GET" and self.layer[7:] in path and st in (200, 206))
        return sum(r[4] for r in rows), fetches


class Servers:
    """Starts and stops the Cove and distribution instances of one run, each on a fresh storage directory."""

    def __init__(self, args, work, procs, upstream):
        self.args, self.work, self.procs, self.up, self.n = args, work, procs, upstream, 0

    def start(self, kind):
        self.n += 1
        d = os.path.join(self.work, f"{kind}-{self.n}")
        if kind == "cove":
            port = free_port()
            p = Proc([self.args.cove, "serve", "--listen", f"127.0.0.1:{port}", "--storage", os.path.join(d, "storage"),
                      "--upstream", self.up.url, "--log-level", "info"], d + ".log")
            self.procs.append(p)
            url = f"http://127.0.0.1:{port}"
            wait_up(p, url + "/v2/", timeout=120)
            reset_peak(p.p.pid)
        else:
            p, url = start_distribution(d, self.up.url, d + ".log")
            self.procs.append(p)
        return {"kind": kind, "proc": p, "url": url, "dir": d}

    def stop(self, s):
        s["proc"].stop()
        shutil.rmtree(s["dir"], ignore_errors=True)


def settle():
    """Lets the previous phase's page-cache write-back finish so it does not land in the next measurement."""
    try:
        subprocess.run(["sync"], timeout=120)
    except subprocess.TimeoutExpired:
        print("warning: sync took over 120 s", file=sys.stderr)
    time.sleep(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=600)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--parallel", type=int, default=32)
    ap.add_argument("--duration", type=int, default=10, help="seconds per wrk measurement")
    ap.add_argument("--cove", default=os.path.join(ROOT, ".build/release/cove"))
    ap.add_argument("--only", default=",".join(ROWS), help="comma-separated rows: " + ",".join(ROWS))
    ap.add_argument("--out", default=None, help="append a Markdown section to this file")
    args = ap.parse_args()
    only = [r.strip() for r in args.only.split(",") if r.strip()]
    bad = [r for r in only if r not in ROWS]
    if bad or not only:
        ap.error(f"--only: unknown rows {bad}; choose from {','.join(ROWS)}")
    if args.runs < 1 or args.parallel < 1 or args.size_mib < 1:
        ap.error("--runs, --parallel and --size-mib must be positive")
    args.cove = os.path.abspath(args.cove)
    if not os.access(args.cove, os.X_OK):
        raise SystemExit(f"no cove binary at {args.cove} (swift build -c release --product cove, or --cove PATH)")
    require_tools("curl", "openssl", "docker-registry", "nginx", *(["wrk"] if "manifests" in only else []))

    def on_signal(signum, _):
        raise SystemExit(f"stopped by signal {signum}")
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(s, on_signal)

    work = tempfile.mkdtemp(prefix="cove-bench-")
    procs, live = [], []
    try:
        loads = [("start", loadavg())]
        print(f"load average at start: {loads[0][1]}", file=sys.stderr)
        size = args.size_mib << 20
        blob = os.path.join(work, "layer")
        with open(blob, "wb") as f:
            for left in range(size, 0, -(8 << 20)):
                f.write(os.urandom(min(left, 8 << 20)))
        up = Upstream(work, procs, blob)
        os.unlink(blob)
        ngx_root = os.path.join(work, "nginx")
        os.makedirs(os.path.join(ngx_root, "v2", REPO, "manifests"))
        os.link(up.stored, os.path.join(ngx_root, "blob"))  # same inode: the same page-cache pages as the CDN's
        for name in (up.digest, TAG):
            with open(os.path.join(ngx_root, "v2", REPO, "manifests", name), "wb") as f:
                f.write(up.manifest)
        ngx, ngx_url = start_nginx(work, ngx_root)
        procs.append(ngx)
        servers = Servers(args, work, procs, up)
        blob_path = f"/v2/{REPO}/blobs/{up.layer}"
        paths = {"digest": f"/v2/{REPO}/manifests/{up.digest}", "tag": f"/v2/{REPO}/manifests/{TAG}"}
        # warm the page cache for the stored copy (the CDN's and nginx's), so every cold row starts alike
        curl(ngx_url + "/blob")

        res = {}   # (row, server) -> [value per run]
        rss = {}   # phase -> [MiB per run]
        notes = []

        def add(row, server, value):
            res.setdefault((row, server), []).append(value)

        def watch(s):
            """Resets Cove's VmHWM and samples its RssAnon/RssFile until rss_of (a phase's start)."""
            if s["kind"] == "cove":
                reset_peak(s["proc"].p.pid)
                s["sampler"] = RssSampler(s["proc"].p.pid)

        def start_cold(kind):
            """A fresh server of `kind` on an empty cache, watched from now; with the upstream's log mark."""
            settle()
            s = servers.start(kind)
            live.append(s)
            watch(s)
            return s, up.mark()

        def rss_of(s, phase):
            if s["kind"] == "cove":
                anon, file = s.pop("sampler").stop()
                rss.setdefault(phase, []).append((peak_rss_mib(s["proc"].p.pid), anon, file))

        def gbps(n_bytes, seconds):
            return n_bytes / 1e9 / seconds

        for run in range(args.runs):
            order = ["cove", "distribution"] if run % 2 == 0 else ["distribution", "cove"]
            warm = {}  # kind -> a running server holding the blob (from cold-parallel) or the manifest
            if "bytes" in only or "cold-single" in only:
                for kind in order:
                    s, mark = start_cold(kind)
                    curl(s["url"] + paths["tag"], ACCEPT)
                    curl(s["url"] + f"/v2/{REPO}/blobs/" + _config_digest(up.manifest))
                    t, n = curl(s["url"] + blob_path)
                    if n != size:
                        raise SystemExit(f"{kind}: cold GET answered {n} bytes, not {size}")
                    rss_of(s, "cold pull")
                    up.wait_idle()
                    nbytes, fetches = up.usage(mark)
                    add("bytes", kind, nbytes / size)
                    add("cold-single", kind, gbps(size, t))
                    print(f"run {run + 1} cold pull     {kind:12} {gbps(size, t):6.2f} GB/s  upstream {nbytes / size:.2f}× blob "
                          f"({fetches} layer fetches)", file=sys.stderr)
                    servers.stop(s); live.remove(s)
            if "cold-parallel" in only:
                for kind in order:
                    s, mark = start_cold(kind)
                    t, sizes = parallel_gets(s["url"] + blob_path, args.parallel)
                    if any(n != size for n in sizes):
                        raise SystemExit(f"{kind}: cold parallel GETs answered {sizes}")
                    rss_of(s, "cold parallel")
                    up.wait_idle()
                    _, fetches = up.usage(mark)
                    add("cold-parallel", kind, gbps(size * args.parallel, t))
                    add("cold-fetches", kind, fetches)
                    print(f"run {run + 1} cold parallel {kind:12} {gbps(size * args.parallel, t):6.2f} GB/s  "
                          f"{fetches} upstream fetches", file=sys.stderr)
                    warm[kind] = s
            for kind in order:
                if kind not in warm and ("warm" in only or "manifests" in only):
                    s = servers.start(kind)
                    live.append(s)
                    if "warm" in only:
                        curl(s["url"] + blob_path)
                        up.wait_idle()
                    warm[kind] = s
            if "warm" in only:
                settle()
                targets = {k: warm[k]["url"] + blob_path for k in order}
                targets["nginx"] = ngx_url + "/blob"
                if run == 0:
                    for k, url in targets.items():
                        if sha256_of(url) != up.layer:
                            raise SystemExit(f"{k} answered other bytes than {up.layer}")
                for k in (order[0], "nginx", order[1]):
                    if k == "cove":
                        watch(warm[k])
                    mark = up.mark()
                    t, sizes = parallel_gets(targets[k], args.parallel)
                    if any(n != size for n in sizes):
                        raise SystemExit(f"{k}: warm parallel GETs answered {sizes}")
                    _, fetches = up.usage(mark)
                    if fetches:
                        notes.append(f"run {run + 1}: {k} fetched the layer {fetches}× upstream during the warm phase")
                    if k == "cove":
                        rss_of(warm[k], "warm parallel")
                    add("warm", k, gbps(size * args.parallel, t))
                    print(f"run {run + 1} warm parallel {k:12} {gbps(size * args.parallel, t):6.2f} GB/s", file=sys.stderr)
            if "manifests" in only:
                bases = {k: warm[k]["url"] for k in order}
                bases["nginx"] = ngx_url
                for k, base in bases.items():  # cache the manifest by digest and by tag; all answer the same bytes
                    for path in paths.values():
                        r = subprocess.run(["curl", "-s", "-f", "--max-time", "60", "-H", f"Accept: {ACCEPT}", base + path],
                                           capture_output=True, timeout=90)
                        if r.returncode != 0 or r.stdout != up.manifest:
                            raise SystemExit(f"{k}{path} did not answer the manifest (curl {r.returncode})")
                watch(warm["cove"])
                for kind, path in paths.items():
                    for k in (order[0], "nginx", order[1]):
                        # a 10 s wrk timeout: a slow peer's p99 is measured, not cut off at wrk's default 2 s
                        r = wrk_run(bases[k] + path, args.duration, timeout_s=10)
                        if r["non2xx"]:
                            raise SystemExit(f"wrk against {k}{path} saw non-2xx answers:\n{r['output']}")
                        if r["socket_errors"]:
                            notes.append(f"run {run + 1}: manifest by {kind} on {k}: wrk {r['socket_errors']}")
                        rps, p99 = r["rps"], r["p99_ms"]
                        add(f"manifest-{kind}", k, (rps, p99))
                        print(f"run {run + 1} manifest {kind:6} {k:12} {rps:>10,.0f} req/s  p99 {p99:.2f} ms", file=sys.stderr)
                rss_of(warm["cove"], "manifests")
            for s in list(warm.values()):
                servers.stop(s); live.remove(s)
            loads.append((f"after run {run + 1}", loadavg()))
            print(f"load average after run {run + 1}: {loads[-1][1]}", file=sys.stderr)
        loads.append(("end", loadavg()))

        text = report(args, only, res, rss, notes, loads, up)
        print(text)
        if args.out:
            with open(args.out, "a") as f:
                f.write(text + "\n")
    except BaseException:
        for s in live:  # what the servers in use said last, to tell a crash from a slow machine
            print(f"--- last lines of {s['kind']}'s log ({s['proc'].log.name}):", file=sys.stderr)
            s["proc"].log.flush()
            with open(s["proc"].log.name, errors="replace") as f:
                print("".join(f.readlines()[-15:]), file=sys.stderr)
        raise
    finally:
        for p in list(CHILDREN):
            p.kill()
        for p in reversed(procs):
            p.stop()
        if os.environ.get("KEEP"):
            print(f"work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _config_digest(manifest):
    return json.loads(manifest)["config"]["digest"]


def report(args, only, res, rss, notes, loads, up):
    """The Markdown section: one line per row and peer, then Cove's peak RSS per phase."""
    def cell(values, fmt):
        med, lo, hi = summary(values)
        return f"{fmt(med)} ({fmt(lo)}–{fmt(hi)})"

    def ratio(cove, peer):
        per_run = [c / p for c, p in zip(cove, peer) if p]
        if not per_run or not statistics.median(peer):
            return "–"
        return f"**{statistics.median(cove) / statistics.median(peer):.2f}×** ({min(per_run):.2f}–{max(per_run):.2f})"

    def verdict(ok):
        return "yes" if ok else "**no**"

    n, par = args.runs, args.parallel
    gb = lambda v: f"{v:.2f}"  # noqa: E731
    lines = [
        f"### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — bench/run.py, {args.size_mib} MiB layer, "
        f"{n} run(s), {par} clients",
        f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}; Cove `{args.cove}`. Upstream: "
        "distribution 2.8 with token auth, blob GETs redirected to a loopback CDN (bench/cdn_front.py). "
        "Load average (1/5/15 min): " + "; ".join(f"{w} {l}" for w, l in loads),
        "",
        "Cells: median (min–max) over the runs; ratio = Cove ÷ peer of the medians (min–max of the per-run ratios).",
        "",
        "| row | Cove | peer | peer's figure | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]

    def row(name, key, peer, fmt, target, met, ratio_text=None):
        c, p = res.get((key, "cove")), res.get((key, peer))
        if not c or not p:
            return
        lines.append(f"| {name} | {cell(c, fmt)} | {peer} | {cell(p, fmt)} | {ratio_text or ratio(c, p)} | {target} | {met(c, p)} |")

    med = statistics.median
    row("upstream bytes, one cold pull (× layer size)", "bytes", "distribution", lambda v: f"{v:.2f}×",
        "1× (Cove)", lambda c, p: verdict(max(c) <= 1.01))
    row(f"cold {par}-parallel GETs, aggregate GB/s", "cold-parallel", "distribution", gb,
        "≥ 2× distribution", lambda c, p: verdict(med(c) >= 2 * med(p)))
    row(f"cold {par}-parallel GETs, upstream layer fetches", "cold-fetches", "distribution", lambda v: f"{v:g}",
        "1 (Cove)", lambda c, p: verdict(max(c) == 1))
    row("cold single GET, GB/s", "cold-single", "distribution", gb,
        "≥ 1.2× distribution", lambda c, p: verdict(med(c) >= 1.2 * med(p)))
    row(f"warm {par}-parallel GETs, aggregate GB/s", "warm", "nginx", gb,
        "≥ 0.95× nginx", lambda c, p: verdict(med(c) >= 0.95 * med(p)))
    row(f"warm {par}-parallel GETs, aggregate GB/s", "warm", "distribution", gb,
        "(information)", lambda c, p: "–")
    for kind, target, need in (("digest", "≥ 25,000 req/s, p99 ≤ 5 ms", (25000, 5)), ("tag", "≥ 20,000 req/s", (20000, None))):
        key = f"manifest-{kind}"
        c = res.get((key, "cove"))
        if not c:
            continue
        crps, cp99 = [r for r, _ in c], [p for _, p in c]
        for peer in ("distribution", "nginx"):
            p = res.get((key, peer))
            prps, pp99 = [r for r, _ in p], [q for _, q in p]
            ok = med(crps) >= need[0] and (need[1] is None or med(cp99) <= need[1])
            lines.append(
                f"| manifest hit by {kind}, 64 connections, req/s (p99) | {cell(crps, lambda v: f'{v:,.0f}')} "
                f"(p99 {med(cp99):.1f} ms) | {peer} | {cell(prps, lambda v: f'{v:,.0f}')} (p99 {med(pp99):.1f} ms) | "
                f"{ratio(crps, prps)} | {target} | {verdict(ok)} |")
    if rss:
        lines += ["", f"Cove's peak RSS (VmHWM, reset before each phase) per phase, MiB, median (min–max) over the runs, "
                  f"limit {RSS_LIMIT_MIB} MiB; in brackets the largest RssAnon / RssFile sampled every 50 ms in that phase:"]
        for phase, v in rss.items():
            hwm = [x[0] for x in v]
            lines.append(f"- {phase}: {cell(hwm, lambda x: f'{x:.0f}')}{'' if max(hwm) <= RSS_LIMIT_MIB else ' **over**'} "
                         f"[anon ≤ {max(x[1] for x in v):.0f}, file ≤ {max(x[2] for x in v):.0f}]")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
