#!/usr/bin/env python3
"""Warm blob GETs over TLS: Cove's peak RSS and aggregate throughput with N parallel clients (issue 11's memory
bound on the path that cannot use sendfile). Results: bench/RESULTS.md.

Everything on 127.0.0.1: a plain distribution upstream (Tests/IntegrationTests/Fixtures/registry.py) holding one
incompressible blob; Cove (release build) on a TLS listener with a self-signed certificate; the blob is fetched once
(cold) and then GET by `--clients` curl processes at once, `--rounds` times. Peak RSS is Cove's VmHWM, reset
before each round; beside it the largest RssAnon (heap and anonymous mappings: the buffers) and RssFile (the mapped
binary and libraries) seen in 50 ms samples, which can miss a short spike that VmHWM catches.

Usage: bench/tls_warm.py [--size-mib 100] [--clients 32] [--rounds 3] [--cove .build/release/cove]
"""
import argparse, os, subprocess, sys, tempfile, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Proc, RssSampler, free_port, loadavg, peak_rss_mib, reset_peak  # noqa: E402
from cold_single import upstream_with_blob  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=100)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cove", default=os.path.join(ROOT, ".build/release/cove"))
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="cove-tls-")
    procs = []
    try:
        size = args.size_mib << 20
        reg, upstream, digest = upstream_with_blob(work, size)
        procs.append(reg)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", os.path.join(work, "key.pem"),
                        "-out", os.path.join(work, "cert.pem")], check=True, capture_output=True)
        port = free_port()
        conf = os.path.join(work, "cove.yml")
        with open(conf, "w") as f:
            f.write(f"""listen: "127.0.0.1:{port}"
storage: "{work}/storage"
log_level: warning
tls: {{certificate: "{work}/cert.pem", key: "{work}/key.pem"}}
upstream: {{url: "{upstream}"}}
""")
        cove = Proc([args.cove, "serve", "--config", conf], os.path.join(work, "cove.log"))
        procs.append(cove)
        url = f"https://127.0.0.1:{port}/v2/bench/blob/blobs/{digest}"
        for _ in range(300):
            if subprocess.run(["curl", "-sk", "-o", "/dev/null", f"https://127.0.0.1:{port}/v2/"]).returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run(["curl", "-skf", "-o", "/dev/null", url], check=True, timeout=300)  # cold: fills the cache
        time.sleep(1)
        print(f"{args.size_mib} MiB blob, {args.clients} clients over TLS, load {loadavg()}")
        for r in range(args.rounds):
            reset_peak(cove.p.pid)
            sampler = RssSampler(cove.p.pid)
            start = time.time()
            clients = [subprocess.Popen(["curl", "-skf", "--max-time", "300", "-o", "/dev/null", "-w", "%{size_download}", url],
                                        stdout=subprocess.PIPE, text=True) for _ in range(args.clients)]
            sizes = [int(c.communicate()[0] or 0) for c in clients]
            took = time.time() - start
            anon, mapped = sampler.stop()
            bad = sum(1 for s in sizes if s != size)
            print(f"round {r + 1}: {args.clients * size / took / 1e9:.2f} GB/s aggregate, peak RSS {peak_rss_mib(cove.p.pid):.0f} MiB "
                  f"(sampled RssAnon {anon:.0f}, RssFile {mapped:.0f} MiB), {bad} incomplete, load {loadavg()}")
    finally:
        for p in procs:
            p.stop()


if __name__ == "__main__":
    main()
