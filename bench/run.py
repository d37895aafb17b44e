#!/usr/bin/env python3
"""Cove blob benchmark (issue 3). Run by hand on a quiet machine; results go to bench/RESULTS.md.

Everything runs on 127.0.0.1: a real distribution registry (Debian's docker-registry) as upstream holding
one incompressible blob, Cove (release build) in front of it, and nginx (sendfile on) serving the same file
as the machine's reference for "serving a file over loopback". Clients are curl processes.

Phases, each with Cove's peak RSS (VmHWM, reset between phases through /proc/PID/clear_refs):
  a) cold single GET through Cove  vs  the same GET straight from the upstream
  b) warm single GET and 32-parallel warm GETs through Cove  vs  nginx
  c) 32 concurrent cold GETs through a fresh Cove: upstream blob GETs (access log), time to last byte
Usage: bench/run.py [--size-mib 512] [--parallel 32] [--cove .build/release/cove] [--out bench/RESULTS.md]
"""
import argparse, hashlib, json, os, platform, shutil, signal, socket, subprocess, sys, tempfile, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Proc, free_port, peak_rss_mib, reset_peak, wait_http  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def curl_get(url):
    """One GET; returns (seconds, bytes, sha256 hex) with the body hashed by curl's consumer."""
    p = subprocess.Popen(["curl", "-s", "-f", "-w", "%{time_total} %{size_download}", "-o", "/dev/null", url],
                         stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate()
    if p.returncode != 0:
        raise SystemExit(f"curl {url} failed with {p.returncode}")
    t, n = out.split()
    return float(t), int(n)


def parallel_gets(url, n):
    start = time.time()
    procs = [subprocess.Popen(["curl", "-s", "-f", "-w", "%{size_download}", "-o", "/dev/null", url],
                              stdout=subprocess.PIPE, text=True) for _ in range(n)]
    sizes = []
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"parallel curl failed with {p.returncode}")
        sizes.append(int(out))
    return time.time() - start, sizes


def verify(url, digest):
    h = hashlib.sha256()
    with subprocess.Popen(["curl", "-s", "-f", url], stdout=subprocess.PIPE) as p:
        for chunk in iter(lambda: p.stdout.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest() == digest


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--parallel", type=int, default=32)
    ap.add_argument("--cove", default=os.path.join(ROOT, ".build/release/cove"))
    ap.add_argument("--out", default=None, help="append a results section to this Markdown file")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="cove-bench-")
    procs = []
    try:
        size = args.size_mib << 20
        blob = os.path.join(work, "blob")
        h = hashlib.sha256()
        with open(blob, "wb") as f:
            left = size
            while left:
                chunk = os.urandom(min(left, 8 << 20)); f.write(chunk); h.update(chunk); left -= len(chunk)
        digest = "sha256:" + h.hexdigest()

        reg_port = free_port()
        reg = Proc([sys.executable, os.path.join(ROOT, "Tests/IntegrationTests/Fixtures/registry.py"), "--mode", "plain",
                    "--port", str(reg_port), "--root", os.path.join(work, "registry")], os.path.join(work, "registry.log"))
        procs.append(reg)
        upstream = f"http://127.0.0.1:{reg_port}"
        wait_http(upstream + "/v2/")
        loc = subprocess.run(["curl", "-s", "-D", "-", "-o", "/dev/null", "-X", "POST", upstream + "/v2/bench/blob/blobs/uploads/"],
                             capture_output=True, text=True).stdout
        location = [l.split(":", 1)[1].strip() for l in loc.splitlines() if l.lower().startswith("location:")][0]
        if location.startswith("/"):
            location = upstream + location
        sep = "&" if "?" in location else "?"
        subprocess.run(["curl", "-s", "-f", "-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary", "@" + blob,
                        f"{location}{sep}digest={digest}"], check=True, capture_output=True)

        ngx_port = free_port()
        ngx_root = os.path.join(work, "nginx"); os.makedirs(ngx_root)
        os.link(blob, os.path.join(ngx_root, "blob"))
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""worker_processes auto; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; tcp_nopush on;
  client_body_temp_path {work}/ngx_body; proxy_temp_path {work}/ngx_proxy; fastcgi_temp_path {work}/ngx_fcgi;
  uwsgi_temp_path {work}/ngx_uwsgi; scgi_temp_path {work}/ngx_scgi;
  server {{ listen 127.0.0.1:{ngx_port}; root {ngx_root}; }} }}
""")
        ngx = Proc(["nginx", "-c", conf, "-g", "daemon off;" + (" user root;" if os.geteuid() == 0 else "")], os.path.join(work, "nginx.log"))
        procs.append(ngx)
        wait_http(f"http://127.0.0.1:{ngx_port}/blob")

        def start_cove(name):
            port = free_port()
            p = Proc([args.cove, "serve", "--listen", f"127.0.0.1:{port}", "--storage", os.path.join(work, name),
                      "--upstream", upstream, "--log-level", "warning"], os.path.join(work, name + ".log"))
            procs.append(p)
            wait_http(f"http://127.0.0.1:{port}/v2/")
            return p, f"http://127.0.0.1:{port}/v2/bench/blob/blobs/{digest}"

        def upstream_gets():
            with open(os.path.join(work, "registry.log")) as f:
                return sum(1 for l in f if f'"GET /v2/bench/blob/blobs/{digest}' in l)

        res = {"size_mib": args.size_mib, "parallel": args.parallel}
        # warm the page cache for the upstream's copy and nginx's copy alike
        curl_get(f"{upstream}/v2/bench/blob/blobs/{digest}"); curl_get(f"http://127.0.0.1:{ngx_port}/blob")

        # (a) cold single GET
        cove, url = start_cove("cove-a")
        reset_peak(cove.p.pid)
        res["direct_s"], _ = curl_get(f"{upstream}/v2/bench/blob/blobs/{digest}")
        res["cold_s"], n = curl_get(url)
        assert n == size
        res["rss_a"] = peak_rss_mib(cove.p.pid)
        assert verify(url, digest), "cold body digest mismatch"
        # (b) warm single and parallel; let the fill's fsync write-back settle first
        subprocess.run(["sync"]); time.sleep(1)
        reset_peak(cove.p.pid)
        res["warm_s"], _ = curl_get(url)
        res["nginx_s"], _ = curl_get(f"http://127.0.0.1:{ngx_port}/blob")
        res["warm_par_s"], sizes = parallel_gets(url, args.parallel)
        assert all(s == size for s in sizes)
        res["nginx_par_s"], _ = parallel_gets(f"http://127.0.0.1:{ngx_port}/blob", args.parallel)
        res["rss_b"] = peak_rss_mib(cove.p.pid)
        cove.stop()
        # (c) concurrent cold GETs on a fresh cache
        subprocess.run(["sync"]); time.sleep(1)
        before = upstream_gets()
        cove, url = start_cove("cove-c")
        reset_peak(cove.p.pid)
        res["cold_par_s"], sizes = parallel_gets(url, args.parallel)
        assert all(s == size for s in sizes), sizes
        time.sleep(0.5)
        res["cold_par_upstream_gets"] = upstream_gets() - before
        res["rss_c"] = peak_rss_mib(cove.p.pid)
        cove.stop()

        mib = args.size_mib
        def rate(s, k=1): return f"{mib * k / s:,.0f} MiB/s"
        lines = [
            f"### {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} — {mib} MiB blob, {args.parallel} clients",
            f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}; Cove {args.cove}",
            "",
            "| phase | Cove | reference | ratio | target | Cove peak RSS |",
            "|---|---|---|---|---|---|",
            f"| (a) cold single GET | {res['cold_s']:.2f} s ({rate(res['cold_s'])}) | upstream direct {res['direct_s']:.2f} s ({rate(res['direct_s'])}) | {res['direct_s']/res['cold_s']:.2f}× | ≥ 0.9× | {res['rss_a']:.0f} MiB |",
            f"| (b) warm single GET | {res['warm_s']:.2f} s ({rate(res['warm_s'])}) | nginx {res['nginx_s']:.2f} s ({rate(res['nginx_s'])}) | {res['nginx_s']/res['warm_s']:.2f}× | ≥ 0.9× | {res['rss_b']:.0f} MiB |",
            f"| (b) warm {args.parallel}-parallel GETs | {res['warm_par_s']:.2f} s ({rate(res['warm_par_s'], args.parallel)}) | nginx {res['nginx_par_s']:.2f} s ({rate(res['nginx_par_s'], args.parallel)}) | {res['nginx_par_s']/res['warm_par_s']:.2f}× | ≥ 0.9× | (same phase) |",
            f"| (c) {args.parallel} concurrent cold GETs | last byte after {res['cold_par_s']:.2f} s | — | upstream blob GETs: **{res['cold_par_upstream_gets']}** | exactly 1 | {res['rss_c']:.0f} MiB |",
            "",
        ]
        text = "\n".join(lines)
        print(text)
        print(json.dumps(res))
        if args.out:
            with open(args.out, "a") as f:
                f.write(text + "\n")
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(work, ignore_errors=True) if not os.environ.get("KEEP") else print(work)


if __name__ == "__main__":
    main()
