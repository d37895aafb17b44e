#!/usr/bin/env python3
"""Start-up benchmark (issue 8): how fast does `cove serve` serve with a large cache, and how long does the
background start-up reconciliation take?

    swift build -c release --product cove
    python3 bench/startup.py [--cove .build/release/cove] [--blobs 100000] [--runs 3] [--append]

Builds a storage directory with N synthetic cached blobs: the real schema (created by running `cove serve` once
on an empty storage, so GRDB's migrations are the product's), then N rows inserted with Python's sqlite3 and N
small files under blobs/sha256/<2 hex>/<hex> whose names are their SHA-256. It adds `--orphans` files without
rows and `--dangling` rows without files (what a crash can leave) for reconciliation to clean. Then, per run,
it execs `cove serve` and measures from exec to:
  - the first 200 on GET /v2/,
  - the first cached blob served (200 with the right bytes),
  - the log line "start-up reconciliation finished" (the background task),
and runs `cove stats` / `cove verify` through the admin socket once at the end. Loopback only. With
`--append` the table is appended to bench/RESULTS.md.
"""
import argparse
import datetime
import hashlib
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_get(url, timeout=2.0):
    try:
        with urllib.request.urlopen(urllib.request.Request(url), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except (ConnectionError, OSError):
        return 0, b""


def start(cove, config, log_path):
    log = open(log_path, "wb")
    t0 = time.monotonic()
    p = subprocess.Popen([cove, "serve", "--config", config], stdout=log, stderr=log)
    return p, t0, log


def stop(p):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_status(url, status, deadline, p=None):
    while time.monotonic() < deadline:
        if p is not None and p.poll() is not None:
            raise SystemExit(f"cove exited with {p.returncode} before {url} answered {status}")
        code, body = http_get(url)
        if code == status:
            return body
        time.sleep(0.002)
    raise SystemExit(f"{url} did not answer {status} in time")


def populate(storage, n, orphans, dangling):
    db = sqlite3.connect(os.path.join(storage, "index.sqlite"))
    db.execute("PRAGMA journal_mode=WAL")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.000")
    rng = random.Random(8)
    rows = []
    sample = None

    def write_blob(i):
        data = rng.randbytes(64) + i.to_bytes(8, "big")
        hexd = hashlib.sha256(data).hexdigest()
        d = os.path.join(storage, "blobs", "sha256", hexd[:2])
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, hexd), "wb") as f:
            f.write(data)
        return hexd, data

    for i in range(n):
        hexd, data = write_blob(i)
        rows.append(("sha256:" + hexd, len(data), "application/octet-stream", now, now))
        if sample is None:
            sample = (hexd, data)
        if len(rows) >= 10000:
            db.executemany("INSERT INTO blob(digest,size,mediaType,createdAt,lastAccessAt) VALUES (?,?,?,?,?)", rows)
            db.commit()
            rows = []
    for i in range(orphans):
        write_blob(n + i)  # a file without a row
    for i in range(dangling):  # a row without a file
        hexd = hashlib.sha256(b"dangling" + i.to_bytes(8, "big")).hexdigest()
        rows.append(("sha256:" + hexd, 72, "application/octet-stream", now, now))
    db.executemany("INSERT INTO blob(digest,size,mediaType,createdAt,lastAccessAt) VALUES (?,?,?,?,?)", rows)
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return sample


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cove", default=os.path.join(HERE, "..", ".build", "release", "cove"))
    ap.add_argument("--blobs", type=int, default=100000)
    ap.add_argument("--orphans", type=int, default=100)
    ap.add_argument("--dangling", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--append", action="store_true")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    cove = os.path.abspath(a.cove)
    work = tempfile.mkdtemp(prefix="cove-startup-")
    storage = os.path.join(work, "storage")
    port = free_port()
    config = os.path.join(work, "cove.yml")
    with open(config, "w") as f:
        # The upstream is never contacted: every request below is a cache hit. offline makes sure of it.
        f.write(f'listen: "127.0.0.1:{port}"\nstorage: "{storage}"\nupstream:\n  url: "http://127.0.0.1:9"\n'
                f"offline: true\nlog_level: notice\n")
    base = f"http://127.0.0.1:{port}"
    try:
        # 1. The schema, by the product's own migrations.
        p, t0, log = start(cove, config, os.path.join(work, "schema.log"))
        wait_status(base + "/v2/", 200, time.monotonic() + 60, p)
        stop(p)
        log.close()
        # 2. Synthetic content.
        t = time.monotonic()
        hexd, data = populate(storage, a.blobs, a.orphans, a.dangling)
        print(f"populated {a.blobs} blobs (+{a.orphans} orphan files, +{a.dangling} rows without files) in {time.monotonic() - t:.1f} s",
              file=sys.stderr)
        results = []
        for run in range(a.runs):
            # Drop nothing from the page cache (needs root); runs after the first are warm. Say so.
            log_path = os.path.join(work, f"run{run}.log")
            p, t0, log = start(cove, config, log_path)
            deadline = t0 + 120
            wait_status(base + "/v2/", 200, deadline, p)
            t_v2 = time.monotonic() - t0
            body = wait_status(f"{base}/v2/bench/blobs/sha256:{hexd}", 200, deadline)
            assert body == data, "served bytes differ"
            t_blob = time.monotonic() - t0
            t_rec = None
            while time.monotonic() < deadline:
                with open(log_path, "rb") as lf:
                    if b"start-up reconciliation finished" in lf.read():
                        t_rec = time.monotonic() - t0
                        break
                time.sleep(0.01)
            stats = verify = None
            if run == a.runs - 1:
                s = subprocess.run([cove, "stats", "--config", config], capture_output=True, text=True, timeout=120)
                stats = s.stdout.strip()
                tv = time.monotonic()
                v = subprocess.run([cove, "verify", "--config", config], capture_output=True, text=True, timeout=600)
                verify = (v.returncode, time.monotonic() - tv, v.stdout.strip().splitlines()[-1] if v.stdout.strip() else v.stderr)
            stop(p)
            log.close()
            with open(log_path) as lf:
                rec_line = [l for l in lf if "start-up reconciliation finished" in l]
            results.append((t_v2, t_blob, t_rec, rec_line[0].strip() if rec_line else "", stats, verify))
            print(f"run {run + 1}: /v2/ {t_v2 * 1000:.0f} ms, cached blob {t_blob * 1000:.0f} ms, "
                  f"reconciliation done {t_rec if t_rec is None else round(t_rec * 1000)} ms", file=sys.stderr)
        lines = [
            "",
            f"## {datetime.date.today().isoformat()}, start-up with {a.blobs:,} cached blobs (bench/startup.py)",
            "",
            f"{platform.machine()}, {os.cpu_count()} cores, Linux {platform.release()}; `{os.path.relpath(cove, os.path.join(HERE, '..'))}`; "
            f"{a.blobs:,} blob rows and files (72 B each) plus {a.orphans} files without rows and {a.dangling} rows without files. "
            "Times from exec of `cove serve`; run 1 is the first start after populating (the first one also cleans up); "
            "the page cache is warm (populating just wrote everything).",
            "",
            "| run | first 200 on /v2/ | first cached blob served | background reconciliation finished |",
            "|---|---|---|---|",
        ]
        for i, (v2, blob, rec, _, _, _) in enumerate(results):
            lines.append(f"| {i + 1} | {v2 * 1000:.0f} ms | {blob * 1000:.0f} ms | {'n/a' if rec is None else f'{rec * 1000:.0f} ms'} |")
        lines.append("")
        lines.append("Reconciliation log lines, run 1 and last:")
        lines.append("```")
        lines.append(results[0][3])
        lines.append(results[-1][3])
        lines.append("```")
        if results[-1][4]:
            lines.append("`cove stats` through the admin socket:")
            lines.append("```")
            lines.append(results[-1][4])
            lines.append("```")
        if results[-1][5]:
            rc, secs, last = results[-1][5]
            lines.append(f"`cove verify` through the admin socket: exit {rc} in {secs:.1f} s — {last}")
        text = "\n".join(lines) + "\n"
        print(text)
        if a.append:
            with open(os.path.join(HERE, "RESULTS.md"), "a") as f:
                f.write(text)
    finally:
        if a.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
