#!/usr/bin/env python3
"""Build small but real container images as OCI image layouts, for Cove's integration tests.

Usage: make_images.py OUTDIR [--seed N] [--blob-size BYTES]

Creates, each tagged `v1` in its layout's index.json (annotation org.opencontainers.image.ref.name):

  OUTDIR/single      one OCI image manifest, 2 tar+gzip layers
  OUTDIR/index       an OCI image index over linux/amd64 and linux/arm64 manifests (own configs + layers)
  OUTDIR/dockerlist  a Docker manifest list over two Docker schema2 manifests (docker media types throughout)
  OUTDIR/big         only with --blob-size: one OCI image manifest whose single layer is a tar+gzip of
                     incompressible random data; the layer blob is exactly BYTES long when BYTES >= 65536
                     (the gzip header's comment field pads it), otherwise a little larger than BYTES.

Every layer is a real tar archive (a few files of random bytes) compressed with gzip; every config is real
image-config JSON whose rootfs.diff_ids are the sha256 of the uncompressed tars.

Prints a JSON summary to stdout (also written to OUTDIR/summary.json):
  {"single": {"layout": PATH, "tag": "v1", "digest": D, "mediaType": MT, "size": N,
              "manifests": [{"digest", "mediaType", "size", "platform": {...}|null,
                             "config": {"digest","mediaType","size"}, "layers": [{...}]}],
              "blobs": [{"digest", "mediaType", "size"}]},   # configs + layers, deduplicated
   "index": {...}, "dockerlist": {...}, "big": {...}}
For `single` and `big`, "manifests" holds the one image manifest (equal to the top digest).
Python 3 standard library only.
"""

import argparse
import hashlib
import io
import json
import os
import random
import struct
import sys
import tarfile
import tempfile
import zlib

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

REF_NAME = "org.opencontainers.image.ref.name"
TAG = "v1"
FIXED_MTIME = 1700000000
CHUNK = 1 << 20


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


class Layout:
    """An OCI image layout directory: oci-layout, index.json, blobs/sha256/<hex>."""

    def __init__(self, path):
        self.path = path
        self.blobdir = os.path.join(path, "blobs", "sha256")
        os.makedirs(self.blobdir, exist_ok=True)
        with open(os.path.join(path, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)

    def put(self, data, media_type):
        hexd = sha256_hex(data)
        p = os.path.join(self.blobdir, hexd)
        if not os.path.exists(p):
            with open(p, "wb") as f:
                f.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + hexd, "size": len(data)}

    def put_file(self, tmp_path, media_type):
        """Move a finished file into the blob store, naming it by its digest."""
        h = hashlib.sha256()
        size = 0
        with open(tmp_path, "rb") as f:
            while True:
                b = f.read(CHUNK)
                if not b:
                    break
                h.update(b)
                size += len(b)
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, os.path.join(self.blobdir, h.hexdigest()))
        return {"mediaType": media_type, "digest": "sha256:" + h.hexdigest(), "size": size}

    def write_index(self, top_descriptor):
        d = dict(top_descriptor)
        d["annotations"] = {REF_NAME: TAG}
        index = {"schemaVersion": 2, "manifests": [d]}
        with open(os.path.join(self.path, "index.json"), "w") as f:
            json.dump(index, f, indent=2)


def canonical(obj):
    return json.dumps(obj, indent=3).encode()


def make_tar(rng, label, nfiles):
    """A real tar archive with a directory and `nfiles` files of random bytes (deterministic metadata)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo("opt/" + label)
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        d.mtime = FIXED_MTIME
        tar.addfile(d)
        for i in range(nfiles):
            data = rng.randbytes(rng.randint(200, 6000))
            ti = tarfile.TarInfo("opt/%s/file%d.bin" % (label, i))
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = FIXED_MTIME
            tar.addfile(ti, io.BytesIO(data))
        ti = tarfile.TarInfo("opt/%s/README" % label)
        text = ("layer %s, made by Cove's make_images.py\n" % label).encode()
        ti.size = len(text)
        ti.mode = 0o644
        ti.mtime = FIXED_MTIME
        tar.addfile(ti, io.BytesIO(text))
    return buf.getvalue()


def gzip_bytes(data, comment=b""):
    """gzip (RFC 1952) with mtime 0, optional FCOMMENT; written by hand so the header can be padded."""
    flags = 0x10 if comment else 0
    header = b"\x1f\x8b\x08" + bytes([flags]) + struct.pack("<I", 0) + b"\x00\xff"
    if comment:
        header += comment + b"\x00"
    co = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = co.compress(data) + co.flush()
    trailer = struct.pack("<II", zlib.crc32(data) & 0xFFFFFFFF, len(data) & 0xFFFFFFFF)
    return header + body + trailer


def make_layer(layout, rng, label, nfiles, media_type):
    """Returns (layer descriptor, diff_id)."""
    tar = make_tar(rng, label, nfiles)
    diff_id = "sha256:" + sha256_hex(tar)
    return layout.put(gzip_bytes(tar), media_type), diff_id


def make_config(layout, arch, diff_ids, media_type, label):
    cfg = {
        "created": "2024-01-01T00:00:00Z",
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "Labels": {"cove.fixture": label},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "make_images.py " + label}
                    for _ in diff_ids],
    }
    if arch == "arm64":
        cfg["variant"] = "v8"
    return layout.put(canonical(cfg), media_type)


def make_image(layout, rng, label, arch, nlayers, docker=False, extra_layers=()):
    """One image manifest (OCI or Docker schema2). Returns (manifest descriptor, child summary)."""
    layer_mt = DOCKER_LAYER if docker else OCI_LAYER
    layers, diff_ids = [], []
    for i in range(nlayers):
        desc, diff_id = make_layer(layout, rng, "%s-%s-l%d" % (label, arch, i), 3 + i, layer_mt)
        layers.append(desc)
        diff_ids.append(diff_id)
    for desc, diff_id in extra_layers:
        layers.append(desc)
        diff_ids.append(diff_id)
    config = make_config(layout, arch, diff_ids, DOCKER_CONFIG if docker else OCI_CONFIG, label)
    manifest = {"schemaVersion": 2, "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
                "config": config, "layers": layers}
    if not docker:
        manifest["annotations"] = {"org.opencontainers.image.title": "cove-fixture-" + label}
    desc = layout.put(canonical(manifest), manifest["mediaType"])
    child = dict(desc)
    child["config"] = config
    child["layers"] = layers
    return desc, child


def platform_for(arch):
    p = {"architecture": arch, "os": "linux"}
    if arch == "arm64":
        p["variant"] = "v8"
    return p


def summarize(layout, top, children):
    blobs, seen = [], set()
    for c in children:
        for b in [c["config"]] + c["layers"]:
            if b["digest"] not in seen:
                seen.add(b["digest"])
                blobs.append({"digest": b["digest"], "mediaType": b["mediaType"], "size": b["size"]})
    return {"layout": os.path.abspath(layout.path), "tag": TAG, "digest": top["digest"],
            "mediaType": top["mediaType"], "size": top["size"], "manifests": children, "blobs": blobs}


def build_single(out, rng):
    lay = Layout(os.path.join(out, "single"))
    desc, child = make_image(lay, rng, "single", "amd64", 2)
    child["platform"] = None
    lay.write_index(desc)
    return summarize(lay, desc, [child])


def build_multi(out, name, rng, docker):
    lay = Layout(os.path.join(out, name))
    entries, children = [], []
    for arch in ("amd64", "arm64"):
        desc, child = make_image(lay, rng, name, arch, 2, docker=docker)
        d = dict(desc)
        d["platform"] = platform_for(arch)
        entries.append(d)
        child["platform"] = d["platform"]
        children.append(child)
    top_mt = DOCKER_LIST if docker else OCI_INDEX
    top = {"schemaVersion": 2, "mediaType": top_mt, "manifests": entries}
    if not docker:
        top["annotations"] = {"org.opencontainers.image.title": "cove-fixture-" + name}
    desc = lay.put(canonical(top), top_mt)
    lay.write_index(desc)
    return summarize(lay, desc, children)


def build_big_layer(layout, rng, size):
    """A tar+gzip layer holding one file of random bytes; the gzip stream is exactly `size` bytes when
    size >= 65536 (stored deflate blocks, then the gzip FCOMMENT field pads to the exact length)."""
    tar_overhead = 512 + 1024  # member header + end-of-archive blocks
    record = tarfile.RECORDSIZE
    stored_overhead = 5 * (size // 65535 + 2)
    slack = record + 512 + 64 + stored_overhead
    payload = max(1, size - slack - tar_overhead) if size >= 65536 else max(1, size)
    fd, tar_path = tempfile.mkstemp(dir=layout.path, prefix=".tar-")
    h_tar = hashlib.sha256()
    with os.fdopen(fd, "w+b") as tf:
        # Stream the tar by hand: one ustar header, the payload, padding, two zero blocks, record padding.
        ti = tarfile.TarInfo("opt/big/random.bin")
        ti.size = payload
        ti.mode = 0o644
        ti.mtime = FIXED_MTIME
        hdr = ti.tobuf(format=tarfile.USTAR_FORMAT)
        tf.write(hdr)
        h_tar.update(hdr)
        left = payload
        while left:
            b = rng.randbytes(min(CHUNK, left))
            tf.write(b)
            h_tar.update(b)
            left -= len(b)
        total = len(hdr) + payload
        pad = (-payload) % 512 + 1024
        total += pad
        pad += (-total) % record
        z = b"\x00" * pad
        tf.write(z)
        h_tar.update(z)
        tar_len = len(hdr) + payload + pad
        # Compress with stored blocks (level 0): random data does not compress anyway.
        tf.seek(0)
        crc = 0
        co = zlib.compressobj(0, zlib.DEFLATED, -15)
        fd2, body_path = tempfile.mkstemp(dir=layout.path, prefix=".deflate-")
        with os.fdopen(fd2, "wb") as bf:
            while True:
                b = tf.read(CHUNK)
                if not b:
                    break
                crc = zlib.crc32(b, crc)
                bf.write(co.compress(b))
            bf.write(co.flush())
            body_len = bf.tell()
    os.unlink(tar_path)
    trailer = struct.pack("<II", crc & 0xFFFFFFFF, tar_len & 0xFFFFFFFF)
    base = 10 + body_len + 8
    comment = b""
    if size >= 65536 and size - base >= 2:
        comment = b"cove-fixture-padding-" + b"p" * (size - base - 1 - 21)
        comment = comment[: size - base - 1]
    flags = 0x10 if comment else 0
    header = b"\x1f\x8b\x08" + bytes([flags]) + struct.pack("<I", 0) + b"\x00\xff"
    if comment:
        header += comment + b"\x00"
    fd3, gz_path = tempfile.mkstemp(dir=layout.path, prefix=".gz-")
    with os.fdopen(fd3, "wb") as gf, open(body_path, "rb") as bf:
        gf.write(header)
        while True:
            b = bf.read(CHUNK)
            if not b:
                break
            gf.write(b)
        gf.write(trailer)
    os.unlink(body_path)
    desc = layout.put_file(gz_path, OCI_LAYER)
    return desc, "sha256:" + h_tar.hexdigest()


def build_big(out, rng, size):
    lay = Layout(os.path.join(out, "big"))
    big = build_big_layer(lay, rng, size)
    desc, child = make_image(lay, rng, "big", "amd64", 0, extra_layers=[big])
    child["platform"] = None
    lay.write_index(desc)
    return summarize(lay, desc, [child])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=None, help="make the images reproducible (default: random)")
    ap.add_argument("--blob-size", type=int, default=None, metavar="BYTES",
                    help="also build OUTDIR/big with one layer of incompressible random data of BYTES bytes")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(8), "big")
    rng = random.Random(seed)
    os.makedirs(args.outdir, exist_ok=True)
    summary = {
        "single": build_single(args.outdir, rng),
        "index": build_multi(args.outdir, "index", rng, docker=False),
        "dockerlist": build_multi(args.outdir, "dockerlist", rng, docker=True),
    }
    if args.blob_size is not None:
        if args.blob_size < 1:
            ap.error("--blob-size must be positive")
        summary["big"] = build_big(args.outdir, rng, args.blob_size)
    text = json.dumps(summary, indent=2)
    with open(os.path.join(args.outdir, "summary.json"), "w") as f:
        f.write(text + "\n")
    sys.stdout.write(text + "\n")


if __name__ == "__main__":
    main()
