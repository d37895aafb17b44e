#!/usr/bin/env python3
"""Writes an OCI image layout with one zstd-compressed layer (application/vnd.oci.image.layer.v1.tar+zstd).

usage: make_zstd_image.py OUTDIR   (needs the zstd CLI; prints the manifest digest)
"""
import hashlib, io, json, os, subprocess, sys, tarfile

out = sys.argv[1]
os.makedirs(os.path.join(out, "blobs", "sha256"), exist_ok=True)

def put(data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(out, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return "sha256:" + digest

raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
    payload = os.urandom(200_000)
    info = tarfile.TarInfo("data/random.bin"); info.size = len(payload); info.mtime = 0
    t.addfile(info, io.BytesIO(payload))
tar = raw.getvalue()
layer = subprocess.run(["zstd", "-q", "-c", "-3"], input=tar, stdout=subprocess.PIPE, check=True).stdout
layer_digest = put(layer)
config = json.dumps({"architecture": "amd64", "os": "linux",
                     "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar).hexdigest()]}},
                    separators=(",", ":")).encode()
config_digest = put(config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": len(config)},
                       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": layer_digest, "size": len(layer)}]},
                      separators=(",", ":")).encode()
manifest_digest = put(manifest)
with open(os.path.join(out, "oci-layout"), "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
               "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}, f)
print(manifest_digest)
