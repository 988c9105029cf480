"""One node's image pull for ``bench/p2p.py``: the manifest by tag, then every blob, digest-checked.

``p2p_pull.py <base URL> <repository> <tag> [--ns HOST] [--parallel 3] [--out FILE]``

The same puller runs for both paths of the bench, pointed at the registry (direct) or at the
node's agent (Gaia), so only the path differs. Like containerd it fetches up to three blobs at
a time. It writes ``{"seconds": ..., "bytes": ...}`` to ``--out`` and exits 0 when every blob
arrived whole and hashed to its digest, 1 otherwise. Standard library only: it runs inside a
network namespace as its own small process.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import http.client
import json
import sys
import time
import urllib.parse

ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def _get(base: str, path: str, headers: dict[str, str]) -> tuple[int, bytes | int, str]:
    """GET; for blobs returns (status, byte count, sha256 hex) hashing as it streams."""
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=600)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        if "/manifests/" in path:
            return response.status, response.read(), ""
        h, n = hashlib.sha256(), 0
        while chunk := response.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
        return response.status, n, h.hexdigest()
    finally:
        conn.close()


def pull(base: str, repository: str, tag: str, ns: str, parallel: int) -> int:
    query = f"?ns={urllib.parse.quote(ns)}" if ns else ""
    status, body, _ = _get(base, f"/v2/{repository}/manifests/{tag}{query}", {"Accept": ACCEPT})
    if status != 200 or not isinstance(body, bytes):
        raise RuntimeError(f"manifest {repository}:{tag}: HTTP {status}")
    manifest = json.loads(body)
    blobs = [manifest["config"], *manifest["layers"]]

    def one(blob: dict[str, object]) -> int:
        digest = str(blob["digest"])
        st, n, sha = _get(base, f"/v2/{repository}/blobs/{digest}{query}", {})
        if st != 200 or f"sha256:{sha}" != digest:
            raise RuntimeError(f"blob {digest}: HTTP {st}, hashed to sha256:{sha}")
        return int(n)

    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
        return sum(pool.map(one, blobs)) + len(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("repository")
    parser.add_argument("tag")
    parser.add_argument("--ns", default="")
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    begun = time.monotonic()
    try:
        size = pull(args.base, args.repository, args.tag, args.ns, args.parallel)
    except Exception as exc:
        print(f"pull failed: {exc}", file=sys.stderr)
        return 1
    result = {"seconds": time.monotonic() - begun, "bytes": size}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
