"""Generates test images as OCI layouts: an index of N platforms, each with M gzip layers of
random content (a real tar holding one file) and a real image config. Pushed with skopeo."""

import gzip
import hashlib
import io
import json
import os
import random
import subprocess
import tarfile

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"

DEFAULT_PLATFORMS = [("linux", "amd64", ""), ("linux", "arm64", "v8")]


def _sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _put_blob(layout, data):
    d = _sha(data)
    path = os.path.join(layout, "blobs", "sha256", d.split(":")[1])
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)
    return {"digest": d, "size": len(data)}


def _layer(rng, size, name):
    # randbytes cannot make more than 256 MiB - 1 bit at once.
    payload = b"".join(rng.randbytes(min(16 << 20, size - off)) for off in range(0, size, 16 << 20))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(name)
        info.size = len(payload)
        info.mtime = 1700000000
        tar.addfile(info, io.BytesIO(payload))
    raw = buf.getvalue()
    # Level 0 keeps generation fast for random payloads; it is still a valid gzip stream.
    gz = gzip.compress(raw, compresslevel=0, mtime=0)
    return gz, _sha(raw)


def make_layout(layout, tag="v1", platforms=None, layers=4, layer_size=1 << 20, seed=1,
                shared_layers=0):
    """Writes an OCI layout with one multi-platform index tagged `tag`. Returns the index digest.
    `shared_layers` of the layers are identical across platforms (as in real base images)."""
    platforms = platforms or DEFAULT_PLATFORMS
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    manifests = []
    for pi, (os_name, arch, variant) in enumerate(platforms):
        layer_descs, diff_ids = [], []
        for li in range(layers):
            s = seed * 1000 + li if li < shared_layers else seed * 1000 + pi * 100 + li
            gz, diff_id = _layer(random.Random(s), layer_size, "file-%d" % li)
            d = _put_blob(layout, gz)
            layer_descs.append({"mediaType": OCI_LAYER_GZIP, **d})
            diff_ids.append(diff_id)
        config = {"architecture": arch, "os": os_name,
                  "config": {"Env": ["PATH=/usr/bin"], "Labels": {"seed": str(seed)}},
                  "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        if variant:
            config["variant"] = variant
        cdesc = _put_blob(layout, json.dumps(config).encode())
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, **cdesc}, "layers": layer_descs}
        mdesc = _put_blob(layout, json.dumps(manifest, indent=1).encode())
        platform = {"architecture": arch, "os": os_name}
        if variant:
            platform["variant"] = variant
        manifests.append({"mediaType": OCI_MANIFEST, **mdesc, "platform": platform})
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    idesc = _put_blob(layout, json.dumps(index, indent=2).encode())
    top = {"schemaVersion": 2, "manifests": [
        {"mediaType": OCI_INDEX, **idesc, "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(top, f)
    return idesc["digest"]


def push(layout, tag, dest, creds=None):
    """Pushes the layout's `tag` to docker://dest with skopeo, keeping every digest."""
    cmd = ["skopeo", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false", "-q"]
    if creds:
        cmd += ["--dest-creds", creds]
    cmd += ["oci:%s:%s" % (layout, tag), "docker://" + dest]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)


def skopeo_copy(src, dest_dir, creds=None):
    """Pulls every platform of docker://src (plain HTTP) into an OCI layout as :v1; the
    CompletedProcess (skopeo verifies every digest)."""
    cmd = ["skopeo", "copy", "--all", "-q", "--src-tls-verify=false"]
    if creds:
        cmd += ["--src-creds", creds]
    cmd += ["docker://" + src, "oci:" + dest_dir + ":v1"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def inspect_raw(ref, creds=None, digest=None):
    """The exact manifest bytes a registry serves (skopeo inspect --raw)."""
    target = ref if digest is None else ref.rsplit(":", 1)[0] + "@" + digest if "@" not in ref else ref
    cmd = ["skopeo", "inspect", "--raw", "--tls-verify=false"]
    if creds:
        cmd += ["--creds", creds]
    cmd.append("docker://" + target)
    r = subprocess.run(cmd, capture_output=True, timeout=60)
    if r.returncode != 0:
        return None
    return r.stdout


if __name__ == "__main__":
    import argparse
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("layout")
    p.add_argument("--tag", default="v1")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--layer-size", type=int, default=16 << 20)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args()
    print(make_layout(a.layout, a.tag, layers=a.layers, layer_size=a.layer_size, seed=a.seed))
