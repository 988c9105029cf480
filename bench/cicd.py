"""Image registry and CI/CD (issue 18): what Gaia's token auth costs a registry's pulls.

Run ``.venv/bin/python bench/cicd.py`` from the repository root. In one run, on one machine:

1. **bare**: Debian's ``docker-registry`` with no authentication (the floor);
2. **gaia**: ``gaia up`` with ``GAIA_REGISTRY_LISTEN``, so the same registry binary runs behind
   Gaia's token auth: every client first asks Gaia's token endpoint (Basic: a user and an API
   token), then pulls with the bearer token;
3. the same image (``--layers`` incompressible layers of ``--layer-mb``) pushed to both;
4. ``--rounds`` rounds, alternating the order, of ``--clients`` concurrent
   ``skopeo copy docker://... dir:...`` pulls of the whole image from each; the figure is the
   aggregate throughput (bytes pulled / wall time of the round), and the overhead
   ``1 - gaia / bare`` on the medians (goal: at most 5 %);
5. the token endpoint alone: ``--tokens`` sequential token requests with an API token (its
   latency is what each pull adds once per repository and scope).

The pipeline half of the issue's bench (push → build → upgrade, by step) is not here yet.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from tests.support.images import oci_layout  # noqa: E402
from tests.support.kube import free_port  # noqa: E402
from tests.support.p2p import Registry, need, random_image  # noqa: E402

PY = sys.executable
ADMIN_PASSWORD = "bench-admin-password-1"
REPO = "bench/img"


@contextlib.contextmanager
def gaia_with_registry(work: Path) -> Iterator[tuple[str, str, str]]:
    """``gaia up`` running its registry; yields (origin, registry host:port, API token)."""
    port, registry_port = free_port(), free_port()
    data = work / "gaia"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}
    env |= {
        "GAIA_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "GAIA_REGISTRY_LISTEN": f"127.0.0.1:{registry_port}",
        "GAIA_EXTERNAL_URL": f"http://127.0.0.1:{port}",
    }
    log = (work / "gaia.log").open("wb")
    process = subprocess.Popen(
        [str(Path(PY).with_name("gaia")), "up", "--port", str(port), "--data-dir", str(data),
         "--no-demo"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    origin = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{origin}/api/healthz", timeout=2).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((work / "gaia.log").read_text()[-2000:])
            time.sleep(0.2)
        with httpx.Client(base_url=origin, timeout=30) as c:
            r = c.post("/api/v1/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD})
            session = {"Authorization": f"Bearer {r.json()['token']}"}
            r = c.post("/api/v1/tokens", json={"name": "bench"}, headers=session)
            r.raise_for_status()
            token = r.json()["token"]
        yield origin, f"127.0.0.1:{registry_port}", token
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=20)
        if process.poll() is None:
            process.kill()


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need("skopeo"), *args], capture_output=True, text=True, timeout=600)


def pull_round(host: str, creds: str | None, clients: int, work: Path) -> float:
    """Seconds for ``clients`` concurrent whole-image pulls."""
    failures: list[str] = []

    def one(i: int) -> None:
        target = work / f"pull-{i}"
        shutil.rmtree(target, ignore_errors=True)
        args = ["copy", "--src-tls-verify=false"]
        args += ["--src-creds", creds] if creds else ["--src-no-creds"]
        done = skopeo(*args, f"docker://{host}/{REPO}:v1", f"dir:{target}")
        if done.returncode != 0:
            failures.append(done.stderr[-300:])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    begun = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - begun
    if failures:
        raise RuntimeError(f"pulls from {host} failed: {failures[0]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--layer-mb", type=float, default=32.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gaia-cicd-bench-"))
    image = random_image(args.layers, int(args.layer_mb * 1e6), seed=7)
    size = sum(len(x.blob.data) for x in image.layers) + len(image.config().data)
    layout = oci_layout(image, work / "layout")
    bare = Registry(work / "bare").start()
    try:
        with gaia_with_registry(work) as (origin, gaia_host, token):
            creds = f"admin:{token}"
            for host, push_creds in ((bare.host, None), (gaia_host, creds)):
                push_args = ["copy", "--dest-tls-verify=false"]
                push_args += ["--dest-creds", push_creds] if push_creds else ["--dest-no-creds"]
                done = skopeo(*push_args, f"oci:{layout}", f"docker://{host}/{REPO}:v1")
                if done.returncode != 0:
                    raise RuntimeError(f"push to {host}: {done.stderr}")
            print(
                f"image {size / 1e6:.0f} MB in {args.layers} layers; {args.clients} concurrent "
                f"skopeo pulls per round, {args.rounds} rounds"
            )
            times: dict[str, list[float]] = {"bare": [], "gaia": []}
            for r in range(args.rounds):
                order = [("bare", bare.host, None), ("gaia", gaia_host, creds)]
                for name, host, c in order if r % 2 == 0 else order[::-1]:
                    times[name].append(pull_round(host, c, args.clients, work))
            moved = size * args.clients
            rate = {k: moved / statistics.median(v) / 1e6 for k, v in times.items()}
            for k in ("bare", "gaia"):
                print(
                    f"{k:5} median {statistics.median(times[k]):6.2f} s per round  "
                    f"{rate[k]:7.1f} MB/s  (rounds: {', '.join(f'{t:.2f}' for t in times[k])})"
                )
            overhead = 1 - rate["gaia"] / rate["bare"]
            verdict = "met" if overhead <= 0.05 else "MISSED"
            print(f"auth overhead {100 * overhead:.1f} % of throughput (goal <= 5 %): {verdict}")
            latencies = []
            with httpx.Client(base_url=origin, timeout=30, auth=("admin", token)) as c:
                for _ in range(args.tokens):
                    began = time.perf_counter()
                    r = c.get(
                        "/api/v1/registry/token",
                        params={"service": "gaia-registry", "scope": f"repository:{REPO}:pull"},
                    )
                    r.raise_for_status()
                    latencies.append(time.perf_counter() - began)
            latencies.sort()
            p50 = latencies[len(latencies) // 2] * 1000
            p95 = latencies[int(len(latencies) * 0.95)] * 1000
            print(f"token endpoint: p50 {p50:.1f} ms, p95 {p95:.1f} ms ({args.tokens} requests)")
            if args.json:
                Path(args.json).write_text(
                    json.dumps(
                        {
                            "times": times,
                            "mb_per_s": rate,
                            "overhead": overhead,
                            "token_p50_ms": p50,
                            "token_p95_ms": p95,
                            "image_bytes": size,
                        },
                        indent=1,
                    )
                )
    finally:
        bare.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
