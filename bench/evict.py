#!/usr/bin/env python3
"""Cove eviction throughput (issue 8). Run by hand; results go to bench/RESULTS.md.

Builds a synthetic cache of N objects (index rows + files, 1 KiB each, distinct access times) in a temp
storage directory, then runs the real binary's `cove gc` with `cache.max_size` at half the cached bytes, so
eviction removes N * 0.55 objects (down to 90 % of the limit) in LRU order: one candidate query per 512 rows,
one delete transaction per batch, then the unlinks. Reports objects/s over the whole command (process start,
migrations and the final output included) and checks that exactly the oldest objects went.

Usage: bench/evict.py [--objects 100000] [--cove .build/release/cove] [--out bench/RESULTS.md]
"""
import argparse, datetime, hashlib, os, random, shutil, sqlite3, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--cove", default=os.path.join(ROOT, ".build/release/cove"))
    ap.add_argument("--out")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="cove-evict-bench-")
    storage = os.path.join(tmp, "cove-data")
    config = os.path.join(tmp, "cove.yml")
    try:
        # Let cove create the storage and run its migrations.
        with open(config, "w") as f:
            f.write(f'storage: "{storage}"\ncache:\n  min_free: 0\n')
        subprocess.run([a.cove, "gc", "--dry-run", "--config", config], check=True, capture_output=True)
        t0 = time.time()
        db = sqlite3.connect(os.path.join(storage, "index.sqlite"))
        base = datetime.datetime(2026, 1, 1)
        rows, payload = [], os.urandom(a.size)
        order = list(range(a.objects))
        random.shuffle(order)  # file creation order differs from LRU order
        for i in order:
            digest = hashlib.sha256(i.to_bytes(8, "big")).hexdigest()
            d = os.path.join(storage, "blobs/sha256", digest[:2])
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, digest), "wb") as f:
                f.write(payload)
            t = (base + datetime.timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S.000")
            rows.append((f"sha256:{digest}", a.size, "application/octet-stream", t, t))
        db.executemany("INSERT INTO blob(digest, size, mediaType, createdAt, lastAccessAt) VALUES (?, ?, ?, ?, ?)", rows)
        db.commit()
        db.close()
        setup = time.time() - t0
        total = a.objects * a.size
        with open(config, "w") as f:
            f.write(f'storage: "{storage}"\ncache:\n  max_size: {total // 2}\n  min_free: 0\n')
        t0 = time.time()
        r = subprocess.run(["/usr/bin/time", "-f", "%U user %S sys %e wall", a.cove, "gc", "--config", config], check=True, capture_output=True, text=True)
        elapsed = time.time() - t0
        print("gc:", r.stderr.strip().splitlines()[-1])
        summary = r.stdout.strip().splitlines()[-1]
        evicted = int(summary.split()[1])
        expected = a.objects - int((total // 2) * 0.9) // a.size
        # LRU check: every evicted object is older than every kept one.
        db = sqlite3.connect(os.path.join(storage, "index.sqlite"))
        kept_min = db.execute("SELECT MIN(lastAccessAt) FROM blob").fetchone()[0]
        left = db.execute("SELECT COUNT(*) FROM blob").fetchone()[0]
        oldest_kept = (base + datetime.timedelta(seconds=evicted)).strftime("%Y-%m-%d %H:%M:%S.000")
        files_left = sum(len(fs) for _, _, fs in os.walk(os.path.join(storage, "blobs")))
        ok = kept_min == oldest_kept and left == a.objects - evicted and files_left == left and abs(evicted - expected) <= 1
        line = (f"| {datetime.date.today()} | {a.objects} x {a.size} B | {evicted} | {elapsed:.2f} s | "
                f"**{evicted / elapsed:,.0f} objects/s** | {setup:.1f} s | {'yes' if ok else 'NO'} |")
        print(summary)
        print(line)
        if a.out:
            with open(a.out, "a") as f:
                f.write(line + "\n")
        if not ok:
            print(f"LRU check failed: kept_min={kept_min} expected {oldest_kept}, rows {left}, files {files_left}", file=sys.stderr)
            sys.exit(1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
