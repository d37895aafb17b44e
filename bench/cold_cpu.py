#!/usr/bin/env python3
"""Where the CPU of one cold blob GET goes: server, upstream and client, before and after the client's last byte
(issue 11's cold single GET row). Results: bench/RESULTS.md.

Same setup as bench/cold_single.py (a plain distribution upstream on 127.0.0.1 holding one random blob, a fresh
storage per GET, contenders alternating): for each GET it reads, from /proc, the CPU time (user + system) of the
server process, of the upstream's processes, of the `curl` client, and the machine's busy and total jiffies
until the last byte, then the server's and the upstream's CPU in the 3 s after it (distribution's proxy stores the
blob from a second upstream fetch in the background). On a machine whose cores the upstream, the server and the
client share, `time ≈ (server + upstream + client CPU before the last byte) / cores / busy share`.

Usage: bench/cold_cpu.py [--size-mib 512] [--rounds 3] [--only cove,dist] [--cove LABEL=PATH ...]
  --cove may be repeated (e.g. a scratch build next to the release build); `cove` is .build/release/cove.
"""
import argparse, os, resource, shutil, subprocess, sys, tempfile, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import Proc, free_port, wait_http  # noqa: E402
from cold_single import start_dist_proxy, upstream_with_blob  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def process_tree(pid):
    out = [pid]
    for child in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split():
        out += process_tree(int(child))
    return out


def machine_jiffies():
    """(busy, total) CPU seconds of the whole machine since boot."""
    v = list(map(int, open("/proc/stat").readline().split()[1:]))
    return (sum(v) - v[3] - v[4]) / HZ, sum(v) / HZ


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="cove,dist")
    ap.add_argument("--cove", action="append", default=[], help="LABEL=PATH of another cove binary (repeatable)")
    args = ap.parse_args()
    binaries = {"cove": os.path.join(ROOT, ".build/release/cove")}
    for spec in args.cove:
        label, _, path = spec.partition("=")
        binaries[label] = os.path.abspath(path)
    contenders = args.only.split(",") + [label for label in binaries if label != "cove" and label not in args.only.split(",")]
    work = tempfile.mkdtemp(prefix="cove-cpu-")
    reg = None
    try:
        size = args.size_mib << 20
        reg, upstream, digest = upstream_with_blob(work, size)
        path = f"/v2/bench/blob/blobs/{digest}"
        subprocess.run(["curl", "-s", "-o", "/dev/null", upstream + path], check=True)  # the upstream's copy in the page cache
        upstream_pids = process_tree(reg.p.pid)
        print("| round | server | time to last byte | GB/s | server CPU s before + after | upstream CPU s before + after "
              "| client CPU s | machine busy / total core-s before the last byte |")
        print("|---|---|---|---|---|---|---|---|")
        for rnd in range(args.rounds):
            for name in contenders:
                storage = os.path.join(work, f"{name}-{rnd}")
                port = free_port()
                log = os.path.join(work, f"{name}-{rnd}.log")
                if name == "dist":
                    p = start_dist_proxy(storage, port, upstream, log)
                else:
                    p = Proc([binaries[name], "serve", "--listen", f"127.0.0.1:{port}", "--storage", storage,
                              "--upstream", upstream, "--log-level", "warning"], log)
                wait_http(f"http://127.0.0.1:{port}/v2/")
                time.sleep(0.5)
                s0, u0, m0 = cpu_seconds(p.p.pid), sum(map(cpu_seconds, upstream_pids)), machine_jiffies()
                c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                out = subprocess.run(["curl", "-s", "-f", "-o", "/dev/null", "-w", "%{time_total} %{size_download}",
                                      f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, timeout=600)
                s1, u1, m1 = cpu_seconds(p.p.pid), sum(map(cpu_seconds, upstream_pids)), machine_jiffies()
                c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                time.sleep(3)
                s2, u2 = cpu_seconds(p.p.pid), sum(map(cpu_seconds, upstream_pids))
                t, n = out.stdout.split()
                t, n = float(t), int(n)
                assert out.returncode == 0 and n == size, (name, out.returncode, n)
                client = (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime)
                print(f"| {rnd + 1} | {name} | {t:.3f} s | {size / t / 1e9:.2f} | {s1 - s0:.2f} + {s2 - s1:.2f} "
                      f"| {u1 - u0:.2f} + {u2 - u1:.2f} | {client:.2f} | {m1[0] - m0[0]:.2f} / {m1[1] - m0[1]:.2f} |", flush=True)
                p.stop()
                shutil.rmtree(storage, ignore_errors=True)
                subprocess.run(["sync"])
                time.sleep(1)
    finally:
        if reg:
            reg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
