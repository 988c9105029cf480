"""Small OCI images for the real test node, built in Python and pushed to a local registry.

No image builder is needed: an image is a few gzip'd tar layers, a config JSON and a manifest
JSON, so ``OciImage`` writes them with ``tarfile`` and ``hashlib`` (deterministically: fixed
times and owners, so the same content gives the same digest on every run), and
``RegistryClient`` uploads them through the distribution API (blob upload POST + monolithic
PUT, manifest PUT) with httpx.

- A shared base layer holds ``/bin/busybox`` from Debian's ``busybox-static`` package and a
  link for every applet ``busybox --list-full`` names (sh, env, cat, hostname, httpd, sleep...).
- ``web_image(version)``: prints ``web <version> starting`` at once, then serves ``/www`` (with
  ``index.html`` and ``ready``) on port 8080 with busybox ``httpd``; the version is baked into a
  layer, so two versions have two digests. It exits on SIGTERM (a PID 1 without a handler would
  ignore it and make every pod deletion wait out its grace period).
- ``pause_image()``: the pod sandbox; sleeps until SIGTERM or SIGINT.

``RegistryClient.tag()`` puts an existing manifest under another tag (one small PUT), which is
how a test gets references that no node has pulled before.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import platform
import re
import shutil
import struct
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WEB_PORT = 8080
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


class ImageBuildError(RuntimeError):
    """An image could not be built or pushed; the message says what is missing."""


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return f"sha256:{hashlib.sha256(self.data).hexdigest()}"

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}


@dataclass(frozen=True)
class Layer:
    blob: Blob
    diff_id: str  # the digest of the uncompressed tar, as the image config lists it


@dataclass(frozen=True)
class OciImage:
    layers: tuple[Layer, ...]
    entrypoint: tuple[str, ...]
    env: tuple[str, ...] = (f"PATH={PATH}",)
    exposed_ports: tuple[int, ...] = ()
    # a "history" entry per layer, as image builders write them: buildah refuses to build on a
    # base image without one (tests/delivery)
    history: bool = False

    def config(self) -> Blob:
        body = {
            "architecture": _architecture(),
            "os": "linux",
            "config": {
                "Env": list(self.env),
                "Entrypoint": list(self.entrypoint),
                "WorkingDir": "/",
                "ExposedPorts": {f"{p}/tcp": {} for p in self.exposed_ports},
            },
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in self.layers]},
        }
        if self.history:
            body["history"] = [{"created_by": "tests/support/images.py"} for _ in self.layers]
        return Blob(OCI_CONFIG, _canonical(body))

    def manifest(self) -> Blob:
        body = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.config().descriptor(),
            "layers": [layer.blob.descriptor() for layer in self.layers],
        }
        return Blob(OCI_MANIFEST, _canonical(body))


# ---------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class Entry:
    path: str
    data: bytes = b""
    mode: int = 0o644
    link_to: str = ""
    is_dir: bool = False


def layer(entries: list[Entry]) -> Layer:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path)
            info.mtime, info.uid, info.gid, info.mode = 0, 0, 0, entry.mode
            if entry.is_dir:
                info.type = tarfile.DIRTYPE
            elif entry.link_to:
                info.type, info.linkname = tarfile.SYMTYPE, entry.link_to
            else:
                info.size = len(entry.data)
            tar.addfile(info, io.BytesIO(entry.data) if info.isfile() else None)
    tar_bytes = raw.getvalue()
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0) as gz:
        gz.write(tar_bytes)
    return Layer(
        Blob(OCI_LAYER, packed.getvalue()), f"sha256:{hashlib.sha256(tar_bytes).hexdigest()}"
    )


def _dirs(*paths: str, mode: int = 0o755) -> list[Entry]:
    return [Entry(p, mode=mode, is_dir=True) for p in paths]


@functools.cache
def busybox_layer() -> Layer:
    binary = static_busybox()
    applets = subprocess.run(
        [str(binary), "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    links = sorted(set(applets) - {"bin/busybox"})
    entries = [
        *_dirs("bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "var", "dev"),
        *_dirs("proc", "sys"),
        *_dirs("tmp", mode=0o1777),
        Entry("bin/busybox", binary.read_bytes(), mode=0o755),
        Entry("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"),
        Entry("etc/group", b"root:x:0:\nnogroup:x:65534:\n"),
        *[Entry(link, link_to="/bin/busybox") for link in links],
    ]
    return layer(entries)


def static_busybox() -> Path:
    """Debian's busybox-static binary: a dynamically linked busybox cannot run in an image
    without a libc."""
    found = shutil.which("busybox")
    if found is None:
        raise ImageBuildError("no busybox: apt-get install busybox-static")
    binary = Path(found).resolve()
    if _has_interpreter(binary.read_bytes()):
        raise ImageBuildError(f"{binary} is dynamically linked: apt-get install busybox-static")
    return binary


def _has_interpreter(elf: bytes) -> bool:
    """Whether a 64-bit little-endian ELF file names a program interpreter (PT_INTERP)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2:
        raise ImageBuildError("busybox is not a 64-bit ELF executable")
    (phoff,) = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    kinds = (struct.unpack_from("<I", elf, phoff + i * phentsize)[0] for i in range(phnum))
    return 3 in kinds


def _architecture() -> str:
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


# ---------------------------------------------------------------------------- images

WEB_SCRIPT = """#!/bin/sh
trap 'echo "web {version} stopping"; exit 0' TERM INT
echo "web {version} starting"
httpd -f -v -p {port} -h /www &
wait $!
"""

PAUSE_SCRIPT = "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"


def web_image(version: str) -> OciImage:
    site = layer(
        [
            *_dirs("www", "etc/gaia"),
            Entry("www/index.html", f"web {version}\n".encode()),
            Entry("www/ready", b"ok\n"),
            Entry("www/version", f"{version}\n".encode()),
            Entry(
                "etc/gaia/web.sh",
                WEB_SCRIPT.format(version=version, port=WEB_PORT).encode(),
                mode=0o755,
            ),
        ]
    )
    return OciImage(
        layers=(busybox_layer(), site),
        entrypoint=("/bin/sh", "/etc/gaia/web.sh"),
        env=(f"PATH={PATH}", f"WEB_VERSION={version}"),
        exposed_ports=(WEB_PORT,),
    )


def pause_image() -> OciImage:
    return OciImage(layers=(busybox_layer(),), entrypoint=("/bin/sh", "-c", PAUSE_SCRIPT))


# ---------------------------------------------------------------------------- registry


class RegistryClient:
    """Pushes images to a distribution registry at ``url``; references name it ``host``
    (the name the node's containerd is configured to reach it by)."""

    def __init__(self, *, url: str, host: str) -> None:
        self.host = host
        self.http = httpx.Client(base_url=url, timeout=30)

    def close(self) -> None:
        self.http.close()

    def reference(self, repository: str, tag: str) -> str:
        return f"{self.host}/{repository}:{tag}"

    def push(self, image: OciImage, *, repository: str, tag: str) -> str:
        for blob in (*(layer.blob for layer in image.layers), image.config()):
            self._push_blob(repository, blob)
        manifest = image.manifest()
        self._put_manifest(repository, tag, manifest.data)
        return self.reference(repository, tag)

    def tag(self, *, repository: str, source: str, tag: str) -> str:
        """Put the manifest tagged ``source`` under ``tag`` as well; returns its reference."""
        if not TAG.fullmatch(tag):
            raise ImageBuildError(f"{tag!r} is not a valid image tag")
        got = self.http.get(
            f"/v2/{repository}/manifests/{source}", headers={"Accept": OCI_MANIFEST}
        )
        self._check(got, f"read {repository}:{source}")
        self._put_manifest(repository, tag, got.content)
        return self.reference(repository, tag)

    def digest(self, repository: str, tag: str) -> str:
        got = self.http.head(f"/v2/{repository}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
        self._check(got, f"read {repository}:{tag}")
        return got.headers["Docker-Content-Digest"]

    def _push_blob(self, repository: str, blob: Blob) -> None:
        if self.http.head(f"/v2/{repository}/blobs/{blob.digest}").status_code == 200:
            return
        started = self.http.post(f"/v2/{repository}/blobs/uploads/")
        self._check(started, f"start an upload to {repository}")
        # the upload URL carries the registry's own state in its query: add to it, never replace
        location = httpx.URL(started.headers["Location"]).copy_add_param("digest", blob.digest)
        done = self.http.put(
            location,
            content=blob.data,
            headers={"Content-Type": "application/octet-stream"},
        )
        self._check(done, f"upload {blob.digest} to {repository}")

    def _put_manifest(self, repository: str, tag: str, manifest: bytes) -> None:
        put = self.http.put(
            f"/v2/{repository}/manifests/{tag}",
            content=manifest,
            headers={"Content-Type": OCI_MANIFEST},
        )
        self._check(put, f"put the manifest {repository}:{tag}")

    @staticmethod
    def _check(response: httpx.Response, what: str) -> None:
        if response.status_code >= 300:
            raise ImageBuildError(
                f"registry refused to {what}: {response.status_code} {response.text[:500]}"
            )


def oci_layout(image: OciImage, folder: Path) -> Path:
    """``image`` as an OCI image layout folder (what ``skopeo copy oci:<folder>`` reads)."""
    blobs = folder / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    manifest = image.manifest()
    for blob in (*(layer.blob for layer in image.layers), image.config(), manifest):
        (blobs / blob.digest.removeprefix("sha256:")).write_bytes(blob.data)
    (folder / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (folder / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "manifests": [manifest.descriptor()]})
    )
    return folder
