#!/usr/bin/env python3
"""Cove export/import throughput (issue 9). Run by hand; results go to bench/RESULTS.md.

Builds a cache holding one image with a single incompressible layer of --size MiB (index rows + files written
directly, as bench/evict.py does), then measures on the same machine:
  1. `cove export -o FILE` of that image (a tar on the same file system),
  2. `cove export -o -` through a pipe (`| cat > /dev/null`: the streaming path without a disk write),
  3. `cove import FILE` into a fresh storage (hash + stage + fsync + rename),
  4. `skopeo copy docker://COVE/bench/big:v1 oci:DIR` from a `cove serve --offline` on the same cache (what
     an operator would otherwise do; skopeo verifies digests and writes an OCI layout), and `skopeo sync` of the
     same repository to a directory.
Every run starts with the source file in the page cache (a warm-up read), like a cache that serves it.

Usage: bench/export.py [--size 512] [--cove .build/release/cove] [--runs 3] [--out bench/RESULTS.md]
"""
import argparse, datetime, hashlib, json, os, shutil, socket, sqlite3, subprocess, sys, tempfile, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import free_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def put(storage, data_or_path, digest):
    d = os.path.join(storage, "blobs/sha256", digest[:2])
    os.makedirs(d, exist_ok=True)
    dest = os.path.join(d, digest)
    if isinstance(data_or_path, bytes):
        with open(dest, "wb") as f:
            f.write(data_or_path)
    else:
        os.rename(data_or_path, dest)


def build_cache(cove, storage, size_mib):
    config = storage + ".yml"
    with open(config, "w") as f:
        f.write(f'storage: "{storage}"\nupstream:\n  url: "http://127.0.0.1:9"\n')
    os.makedirs(storage, exist_ok=True)
    subprocess.run([cove, "stats", "--config", config], check=True, capture_output=True)  # creates the index
    tmp = os.path.join(storage, "layer.tmp")
    h = hashlib.sha256()
    with open(tmp, "wb") as f:
        for _ in range(size_mib):
            chunk = os.urandom(1 << 20)
            h.update(chunk)
            f.write(chunk)
    layer = h.hexdigest()
    put(storage, tmp, layer)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    cfg_d = hashlib.sha256(cfg).hexdigest()
    put(storage, cfg, cfg_d)
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cfg_d, "size": len(cfg)},
                      "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + layer, "size": size_mib << 20}]},
                     separators=(",", ":")).encode()
    man_d = hashlib.sha256(man).hexdigest()
    put(storage, man, man_d)
    t = datetime.datetime.utcnow().strftime("%Y-%m-%d %H:%M:%S.000")
    db = sqlite3.connect(os.path.join(storage, "index.sqlite"))
    for d, s, m in [(layer, size_mib << 20, "application/octet-stream"), (cfg_d, len(cfg), "application/octet-stream"),
                    (man_d, len(man), "application/vnd.oci.image.manifest.v1+json")]:
        db.execute("INSERT INTO blob(digest, size, mediaType, createdAt, lastAccessAt) VALUES (?, ?, ?, ?, ?)", ("sha256:" + d, s, m, t, t))
    db.execute("INSERT INTO manifest(digest, mediaType, registry, repository) VALUES (?, ?, ?, ?)",
               ("sha256:" + man_d, "application/vnd.oci.image.manifest.v1+json", "127.0.0.1:9", "bench/big"))
    for c, s in [(cfg_d, len(cfg)), (layer, size_mib << 20)]:
        db.execute("INSERT INTO manifestChild(parentDigest, childDigest, kind, size, platform) VALUES (?, ?, 'blob', ?, NULL)", ("sha256:" + man_d, "sha256:" + c, s))
    db.execute("INSERT INTO tag(registry, repository, tag, digest, fetchedAt, checkedAt) VALUES (?, ?, ?, ?, ?, ?)",
               ("127.0.0.1:9", "bench/big", "v1", "sha256:" + man_d, t, t))
    db.commit()
    db.close()
    return config, layer


def timed(args, **kw):
    t0 = time.time()
    r = subprocess.run(args, capture_output=True, **kw)
    if r.returncode != 0:
        sys.exit(f"{args[0]} {args[1]} failed: {r.stdout[-2000:]} {r.stderr[-2000:]}")
    return time.time() - t0, r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512, help="layer size, MiB")
    ap.add_argument("--cove", default=os.path.join(ROOT, ".build/release/cove"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="cove-export-bench-")
    server = None
    try:
        storage = os.path.join(tmp, "cove-data")
        config, layer = build_cache(a.cove, storage, a.size)
        mib = a.size
        subprocess.run(["cat", os.path.join(storage, "blobs/sha256", layer[:2], layer)], stdout=subprocess.DEVNULL, check=True)
        port = free_port()
        server = subprocess.Popen([a.cove, "serve", "--offline", "--config", config, "--listen", f"127.0.0.1:{port}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        rows = []
        for run in range(1, a.runs + 1):
            bundle = os.path.join(tmp, "bundle.tar")
            t_file, _ = timed([a.cove, "export", "--config", config, "-o", bundle, "127.0.0.1:9/bench/big:v1"])
            t0 = time.time()
            p = subprocess.run(f"{a.cove} export --config {config} -o - 127.0.0.1:9/bench/big:v1 | cat > /dev/null", shell=True, capture_output=True)
            t_pipe = time.time() - t0
            assert p.returncode == 0, p.stderr
            fresh = os.path.join(tmp, f"import-{run}")
            fresh_cfg = fresh + ".yml"
            with open(fresh_cfg, "w") as f:
                f.write(f'storage: "{fresh}"\nupstream:\n  url: "http://127.0.0.1:9"\n')
            t_import, r = timed([a.cove, "import", "--config", fresh_cfg, bundle])
            assert b"imported 1 images" in r.stdout, r.stdout
            dest = os.path.join(tmp, f"skopeo-{run}")
            t_skopeo, _ = timed(["skopeo", "copy", "--src-tls-verify=false", f"docker://127.0.0.1:{port}/bench/big:v1", f"oci:{dest}:v1"])
            sync_dest = os.path.join(tmp, f"sync-{run}")
            os.makedirs(sync_dest)
            t_sync, _ = timed(["skopeo", "sync", "--src", "docker", "--dest", "dir", "--src-tls-verify=false", f"127.0.0.1:{port}/bench/big:v1", sync_dest])
            for d in [bundle, fresh, dest, sync_dest]:
                shutil.rmtree(d, ignore_errors=True) if os.path.isdir(d) else os.unlink(d)
            row = (run, mib, t_file, t_pipe, t_import, t_skopeo, t_sync)
            rows.append(row)
            print(f"run {run}: export file {t_file:.2f} s ({mib / t_file:.0f} MiB/s), export pipe {t_pipe:.2f} s, import {t_import:.2f} s, "
                  f"skopeo copy {t_skopeo:.2f} s, skopeo sync {t_sync:.2f} s")
        if a.out:
            with open(a.out, "a") as f:
                f.write(f"\n## {datetime.date.today()}: export / import of a {mib} MiB image (`bench/export.py`)\n\n")
                f.write("| run | cove export -o FILE | cove export -o - \| cat > /dev/null | cove import FILE | skopeo copy docker://cove → oci:DIR | skopeo sync → dir |\n|---|---|---|---|---|---|\n")
                for (run, m, tf, tp, ti, ts, tsy) in rows:
                    f.write(f"| {run} | {tf:.2f} s ({m / tf:.0f} MiB/s) | {tp:.2f} s ({m / tp:.0f} MiB/s) | {ti:.2f} s ({m / ti:.0f} MiB/s) | "
                            f"{ts:.2f} s ({m / ts:.0f} MiB/s) | {tsy:.2f} s ({m / tsy:.0f} MiB/s) |\n")
    finally:
        if server:
            server.terminate()
            server.wait(timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
