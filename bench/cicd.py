"""Image registry and CI/CD (issue 18): what Gaia's token auth costs a registry's pulls, and
how long a push takes to run on chosen instances, by step, against the same steps by hand.

Run ``.venv/bin/python bench/cicd.py`` from the repository root (``--part registry`` or
``--part pipeline`` for one half; ``--quick`` for a short run; ``--cluster kubelet`` for the
pipeline half on a real kubelet node, below). ``gaia up`` runs from this checkout
(``python -m gaia``). In one run, on one machine:

**Registry** (``--part registry``):

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

**Pipeline** (``--part pipeline``): time from a ``git push`` to the new version running on
chosen instances, split by step, beside the same clone, build and push done by hand (the floor):

1. the same ``gaia up`` with a simulated cluster, a business, an app of 3 instances on a base
   image (Debian's static busybox, pushed to Gaia's registry as ``public/base:1``) and a pipeline
   on a local bare repository (``GAIA_PIPELINE_LOCAL_GIT=1``) that deploys to 2 of them;
2. per round: a commit that changes the app's files, ``git push`` to the bare repository, the
   push event to the webhook (signed, ``X-Gaia-Signature``), then the run's steps (clone, build,
   push: their durations from ``GET .../runs/{n}``) and the gray upgrade it starts, followed
   until both chosen instances run the new version (the template whose image is the new
   digest); the queueing (webhook accepted -> clone started) is Gaia's own overhead: the runner
   loop claims queued runs every ``GAIA_PIPELINE_RUNNER_INTERVAL_SECONDS`` (2 s);
3. in the same round, by hand: ``git clone`` with the runner's flags, ``buildah build`` with the
   runner's flags into a layer cache of its own (kept across rounds, as the runner's is), and
   ``buildah push`` to the same registry with an API token of the admin (the token flow); then
   ``skopeo copy`` of Gaia's new image into an OCI layout kept across rounds (a node's content
   store: only the new layers move): the pull a real node would do;
4. the order of the two alternates round by round; a first round warms both caches and is not
   counted.

On the simulated cluster the pull is simulated (the sim's made-up layer sizes at its node's
10 Gbit/s), so Gaia's pull is reported as not measured; the sim's own figure is shown apart.

**On a real kubelet** (``--cluster kubelet``; root, cgroup v1, the control plane of
``scripts/build-control-plane.sh``): the same pipeline deploys to an app on a real node instead
of the sim. The bench starts a kube-apiserver + etcd (``tests/support/kube.py``) and joins one
real node to it (``tests/support/node.py``: kubelet, containerd, runc), points the node's
containerd at Gaia's registry (``certs.d/<host:port>/hosts.toml``, plain HTTP) and registers the
plane through the API as a cluster of kind ``kubernetes``. The app's base image is the node
harness's busybox web server (``web_image``: serves ``/ready`` on 8080, so readiness is real), in
Gaia's registry as ``public/base:1``; the kubelet pulls it and every new version with the pull
secret the platform injects. Per round, besides the figures above:

- **pull**: the kubelet's own events on the chosen pods: ``Pulled`` (``Successfully pulled
  image "<ref>@<digest>" in <d>``, the kubelet's own timer) and the span from its ``Pulling``
  event to it (the events' timestamps, whole seconds, printed as a check). The two chosen
  instances share the node, so only the first of them pulls; the second finds the image
  present;
- **upgrade**: from the run's end until both chosen pods run the new digest *in place*, read
  from the API server every 0.1 s: the same pod UID as before, the container's ``imageID`` the
  new digest, its restart count one higher, running and Ready;
- **the floor's pull**: ``ctr images pull`` of the by-hand image of the same commit (same
  sizes, its own layers) by the node's own containerd, into the namespace the kubelet uses
  (``k8s.io``), with the same ``hosts.toml`` and the admin's API token: the same daemon, network
  path, content store and unpack into overlayfs snapshots as the kubelet's pull, without the
  kubelet and CRI around it. (A ``skopeo copy`` would skip the unpack, and a pull of Gaia's own
  image would find it already in the content store.)
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import math
import os
import pwd
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from gaia.delivery.builds import DEFAULT_BUILD_USER  # noqa: E402
from gaia.kube.labels import APP_LABEL, INSTANCE_LABEL  # noqa: E402
from tests.support.images import OciImage, busybox_layer, oci_layout, web_image  # noqa: E402
from tests.support.kube import ControlPlane, build_control_plane, free_port  # noqa: E402
from tests.support.node import RealNode, start_real_node  # noqa: E402
from tests.support.p2p import Registry, need, random_image  # noqa: E402

PY = sys.executable
ADMIN_PASSWORD = "bench-admin-password-1"
REPO = "bench/img"


@contextlib.contextmanager
def gaia_with_registry(
    work: Path, *, runner_interval: float = 2.0
) -> Iterator[tuple[str, str, str]]:
    """``gaia up`` running its registry; yields (origin, registry host:port, API token)."""
    port, registry_port = free_port(), free_port()
    data = work / "gaia"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GAIA_")}
    env |= {
        "GAIA_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "GAIA_REGISTRY_LISTEN": f"127.0.0.1:{registry_port}",
        "GAIA_EXTERNAL_URL": f"http://127.0.0.1:{port}",
        # the pipeline part builds from a bare repository on this machine
        "GAIA_PIPELINE_LOCAL_GIT": "1",
        "GAIA_PIPELINE_RUNNER_INTERVAL_SECONDS": str(runner_interval),
        # this checkout's code, not whatever the venv's `gaia` entry point was installed from
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    log = (work / "gaia.log").open("wb")
    process = subprocess.Popen(
        [PY, "-m", "gaia", "up", "--port", str(port), "--data-dir", str(data), "--no-demo"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
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


def load() -> str:
    """The machine's load (shared with other engineers): 1/5/15-minute averages and cores."""
    averages = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return f"loadavg {averages} on {os.cpu_count()} cores"


def when(stamp: str | None) -> float:
    """A timestamp of Gaia's API as seconds since the epoch (naive ones are UTC)."""
    assert stamp is not None
    moment = dt.datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def timed(argv: list[str], **kwargs: Any) -> float:
    """Seconds ``argv`` took; RuntimeError with its output when it fails."""
    began = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}...: {done.stdout[-500:]} {done.stderr[-1500:]}")
    return time.monotonic() - began


def build_user() -> tuple[int, int] | None:
    """The ids Gaia's runner builds as (``resolve_build_user``: gaia-build when Gaia runs as
    root); the floor builds as the same user, rootless too, or it would measure another
    thing."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(DEFAULT_BUILD_USER)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def as_build_user(argv: list[str]) -> list[str]:
    ids = build_user()
    if ids is None:
        return argv
    return ["setpriv", f"--reuid={ids[0]}", f"--regid={ids[1]}", "--clear-groups", "--", *argv]


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com", *args],
        cwd=cwd, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return done.stdout.strip()


@dataclass
class KubeletBed:
    """A control plane of the bench's own with one real node (``--cluster kubelet``)."""

    plane: ControlPlane
    node: RealNode
    kube: httpx.Client  # the API server, as its admin: pods and the kubelet's events

    @property
    def hosts_dir(self) -> Path:
        """The node's containerd registry configuration (``config_path``: one folder per
        registry host, each with a ``hosts.toml``), which ``ctr`` reads too."""
        return self.node.work / "containerd" / "certs.d"

    def trust_plain_http(self, host: str) -> None:
        """Let the node's containerd pull from ``host`` (Gaia's registry) over plain HTTP."""
        hosts = self.hosts_dir / host / "hosts.toml"
        hosts.parent.mkdir(parents=True, exist_ok=True)
        # containerd 1.6 rejects a hosts.toml without a [host] table
        hosts.write_text(
            f'server = "http://{host}"\n\n'
            f'[host."http://{host}"]\n  capabilities = ["pull", "resolve"]\n'
        )

    def ctr(self, *args: str) -> list[str]:
        return ["ctr", f"--address={self.node.containerd_socket}", "--namespace=k8s.io", *args]


@contextlib.contextmanager
def kubelet_bed(work: Path) -> Iterator[KubeletBed]:
    """etcd + kube-apiserver and one real node (kubelet, containerd, runc) joined to them."""
    plane = ControlPlane(bin_dir=build_control_plane(), work=work / "plane").start()
    try:
        node = start_real_node(plane, work / "node")
        try:
            with plane.http_client() as kube:
                yield KubeletBed(plane=plane, node=node, kube=kube)
        finally:
            node.stop()
    finally:
        plane.stop()


@dataclass
class PodSeen:
    """A chosen instance's pod as the API server last said: the in-place check's baseline."""

    uid: str
    restarts: int


@dataclass
class Pipeline:
    """What the pipeline part set up on the running platform."""

    api: httpx.Client
    registry: str  # host:port
    token: str
    pipeline_id: int
    secret: str
    chosen: list[int]  # the instances the pipeline upgrades
    source: Path  # the working copy commits are made in
    bare: Path  # the repository pushed to and cloned from
    hand: Path  # the by-hand build's folder (its layer cache is kept across rounds)
    bed: KubeletBed | None = None  # None: the simulated cluster
    pods: dict[int, PodSeen] = dataclasses.field(default_factory=dict)  # on the real node


APP = "web"
BUSINESS = "alpha"
PIPES = f"/api/v1/businesses/{BUSINESS}/pipelines"
APP_PATH = f"/api/v1/businesses/{BUSINESS}/apps/{APP}"
# the bench's own requests load the 2-core machine Gaia builds on: the run (whose times come
# from the server) is polled slowly, the instances (whose "running" the bench times) quickly
RUN_POLL_S = 0.25
INSTANCE_POLL_S = 0.1
# the sim's kubelet per instance upgraded in place: the watch, create and start (the sim's
# WATCH_S 0.05, CREATE_S 0.2, START_S 0.3; before issue 22 the first was 0.5), plus its pull
SIM_KUBELET_S = 0.05 + 0.2 + 0.3
# a RUN whose layer stays cached (dependencies), the app's files (new every commit), a RUN on them
DOCKERFILE = """FROM {base}
RUN mkdir -p /srv && echo dependencies > /srv/deps.txt
COPY app/ /srv/app/
RUN sha256sum /srv/app/* > /srv/app.sha256
"""


def set_up_pipeline(
    work: Path,
    *,
    origin: str,
    registry: str,
    token: str,
    app_mb: float,
    bed: KubeletBed | None = None,
) -> Pipeline:
    """A business, a cluster (the sim, or ``bed``'s real node), an app of 3 instances on the
    base image in Gaia's registry, a bare repository and a pipeline on it that deploys to 2 of
    the instances."""
    creds = f"admin:{token}"
    if bed is None:
        base_image = OciImage(layers=(busybox_layer(),), entrypoint=("/bin/sh",), history=True)
    else:
        # a real container must run and answer its readiness probe: the node harness's busybox
        # web server (buildah builds only FROM an image with history)
        base_image = dataclasses.replace(web_image("base"), history=True)
        bed.trust_plain_http(registry)
    base = f"{registry}/public/base:1"
    layout = oci_layout(base_image, work / "base-layout")
    done = skopeo(
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        creds,
        f"oci:{layout}",
        f"docker://{base}",
    )
    if done.returncode != 0:
        raise RuntimeError(f"push of the base image: {done.stderr}")
    api = httpx.Client(base_url=origin, timeout=60, headers={"Authorization": f"Bearer {token}"})

    def call(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        r = api.request(method, url, json=body)
        if r.status_code >= 300:
            raise RuntimeError(f"{method} {url}: {r.status_code} {r.text[:500]}")
        return r.json()

    call("POST", "/api/v1/businesses", {"name": BUSINESS})
    if bed is None:
        cluster = {"name": "sim-1", "kind": "sim", "region": "r", "zone": "z"}
        v1: dict[str, Any] = {"name": "v1", "image": base, "resources": {"cpu": 1, "memory": 256}}
    else:
        cluster = {"name": "real-1", "kind": "kubernetes", "region": "r", "zone": "z",
                   "kubeconfig": bed.plane.kubeconfig_text()}  # fmt: skip
        v1 = {
            "name": "v1",
            "image": base,
            "resources": {"cpu": 0.1, "memory": 64},
            "ports": [{"port": 8080, "name": "http"}],
            # probed every second: "Ready" is the kubelet's word that the new container serves
            "readiness": {"kind": "http", "port": 8080, "path": "/ready", "period_s": 1},
        }
    call("POST", "/api/v1/clusters", cluster)
    quota = {"cpu": 16, "memory": 16384, "local_disk": 100, "cloud_disk": 100, "shared_disk": 10,
             "bandwidth": 1000, "gpu": 0, "gpu_memory": 0}  # fmt: skip
    call("PUT", f"/api/v1/businesses/{BUSINESS}/quotas/{cluster['name']}", {"hard": quota})
    call(
        "POST",
        f"/api/v1/businesses/{BUSINESS}/apps",
        {"name": APP, "cluster": cluster["name"], "templates": [v1], "replicas": 3},
    )
    # a real node pulls the base image and starts three containers on a shared machine
    deadline = time.monotonic() + (60 if bed is None else 240)
    while True:
        items = call("GET", f"{APP_PATH}/instances")["items"]
        if len(items) == 3 and all(x["ready"] for x in items):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the app's instances did not become ready: {items}")
        time.sleep(0.2)
    chosen = sorted(x["id"] for x in items)[:2]
    bare = work / "origin.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    source = work / "source"
    (source / "app").mkdir(parents=True)
    (source / "Dockerfile").write_text(DOCKERFILE.format(base=base))
    commit(source, 0, app_mb)
    git("init", "-q", "-b", "main", cwd=source)
    git("add", "-A", cwd=source)
    git("commit", "-q", "-m", "first", cwd=source)
    git("remote", "add", "origin", bare.as_uri(), cwd=source)
    git("push", "-q", "origin", "main", cwd=source)
    created = call(
        "POST",
        PIPES,
        {
            "name": APP,
            "git_url": bare.as_uri(),
            "deploy": {"app": APP, "instance_ids": chosen},
        },
    )
    hand = work / "hand"
    for sub in ("home", "tmp", "cache/data"):
        (hand / sub).mkdir(parents=True, exist_ok=True)
    auth = {"auths": {registry: {"auth": base64.b64encode(creds.encode()).decode()}}}
    (hand / "auth.json").write_text(json.dumps(auth))
    (hand / "auth.json").chmod(0o600)
    ids = build_user()
    if ids is not None:  # the floor's clone reads root's bare repository, as the runner's does
        (hand / "home" / ".gitconfig").write_text(f"[safe]\n\tdirectory = {bare}\n")
        subprocess.run(["chown", "-R", f"{ids[0]}:{ids[1]}", str(hand)], check=True)
    return Pipeline(
        api=api,
        registry=registry,
        token=token,
        pipeline_id=created["id"],
        secret=created["webhook_secret"],
        chosen=chosen,
        source=source,
        bare=bare,
        hand=hand,
        bed=bed,
        pods={} if bed is None else {i: seen for i, (seen, _) in chosen_pods(bed, chosen).items()},
    )


def commit(source: Path, n: int, app_mb: float) -> None:
    """The app's files for round ``n``: incompressible bytes (a build's output) and a version."""
    (source / "app" / "blob.bin").write_bytes(os.urandom(int(app_mb * 1e6)))
    (source / "app" / "version.txt").write_text(f"round {n}\n")


def gaia_round(p: Pipeline, sha: str) -> dict[str, Any]:
    """The push event to the webhook, then the run and its upgrade, followed to the end."""
    body = json.dumps({"ref": "refs/heads/main", "after": sha, "deleted": False}).encode()
    signature = "sha256=" + hmac.new(p.secret.encode(), body, hashlib.sha256).hexdigest()
    sent = time.time()
    r = p.api.post(
        f"/api/v1/hooks/pipelines/{p.pipeline_id}",
        content=body,
        headers={"X-Gaia-Signature": signature, "Content-Type": "application/json"},
    )
    accepted = time.time()
    if r.status_code != 202 or r.json()["run"] is None:
        raise RuntimeError(f"webhook: {r.status_code} {r.text[:300]}")
    number = r.json()["run"]
    while True:
        run = p.api.get(f"{PIPES}/{APP}/runs/{number}").json()
        if run["state"] not in ("queued", "running"):
            break
        time.sleep(RUN_POLL_S)
    if run["state"] != "succeeded" or run["upgrade_id"] is None:
        raise RuntimeError(f"run {number}: {run['state']} {run['failure']}")
    if run["commit"] != sha:
        raise RuntimeError(f"run {number} built {run['commit']}, not the pushed {sha}")
    target = f"{APP}-{number}"
    # on a real node "running" is the API server's word (the kubelet's status of the pods);
    # Gaia's API must then agree too, and how much later it does is reported apart
    in_place: float | None = None
    deadline = time.monotonic() + 300
    while True:
        if p.bed is not None and in_place is None and runs_in_place(p, run["digest"]):
            in_place = time.time()
        items = p.api.get(f"{APP_PATH}/instances").json()["items"]
        on = {x["id"]: x for x in items if x["id"] in p.chosen}
        if (
            all(
                x["version"] == target and x["ready"] and x["status"] == "Running"
                for x in on.values()
            )
            and len(on) == len(p.chosen)
            and (p.bed is None or in_place is not None)
        ):
            seen = time.time()
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {number}: the chosen instances did not run {target}: {on}")
        time.sleep(INSTANCE_POLL_S)
    running = seen if in_place is None else in_place
    template = p.api.get(f"{APP_PATH}/templates/{target}").json()
    if not template["image"].endswith(f"@{run['digest']}"):
        raise RuntimeError(f"version {target} runs {template['image']}, not {run['digest']}")
    steps = {s["name"]: s for s in run["steps"]}
    if list(steps) != ["clone", "build", "push"]:
        raise RuntimeError(f"run {number} had the steps {list(steps)}")
    upgrade = p.api.get(f"{APP_PATH}/upgrades/{run['upgrade_id']}").json()
    on_node: dict[str, Any] = {}
    if p.bed is not None:
        on_node = kubelet_round(p, run["digest"])
        on_node["gaia_sees"] = seen - running
    return on_node | {
        "run": number,
        "webhook": accepted - sent,
        "queue": when(run["started_at"]) - accepted,
        "prepare": when(steps["clone"]["started_at"]) - when(run["started_at"]),
        "clone": steps["clone"]["duration"],
        "build": steps["build"]["duration"],
        "push": steps["push"]["duration"],
        "gaps": when(steps["push"]["finished_at"])
        - when(steps["clone"]["started_at"])
        - sum(s["duration"] for s in steps.values()),
        "deploy": when(run["finished_at"]) - when(steps["push"]["finished_at"]),
        "upgrade": running - when(run["finished_at"]),
        "to_image": when(steps["push"]["finished_at"]) - sent,
        "to_running": running - sent,
        "sim_pull": sim_pull(p, run["digest"]) if p.bed is None else math.nan,
        "upgrade_state": upgrade["state"],
        "chosen": p.chosen,
        "digest": run["digest"],
    }


def sim_pull(p: Pipeline, digest: str) -> float:
    """The simulated cluster's own pull time of ``digest`` (its "Pulled" events), median of
    the chosen instances; NaN when the events do not say."""
    found: list[float] = []
    for _ in range(20):
        events = p.api.get(
            "/api/v1/events", params={"business": BUSINESS, "app": APP, "reason": "Pulled"}
        ).json()["items"]
        for event in events:
            match = re.search(r"@(sha256:[0-9a-f]+)\" in ([0-9.]+)(ms|s) ", event["message"])
            if match and match.group(1) == digest:
                found.append(float(match.group(2)) / (1000 if match.group(3) == "ms" else 1))
        if len(found) >= len(p.chosen):
            return statistics.median(found)
        found.clear()
        time.sleep(0.25)
    return math.nan


# ---------------------------------------------------------------------------- the real node


def chosen_pods(bed: KubeletBed, chosen: list[int]) -> dict[int, tuple[PodSeen, dict[str, Any]]]:
    """The chosen instances' pods (the app's, by label) as the API server has them now."""
    pods = bed.kube.get("/api/v1/pods", params={"labelSelector": f"{APP_LABEL}={APP}"})
    pods.raise_for_status()
    found: dict[int, tuple[PodSeen, dict[str, Any]]] = {}
    for pod in pods.json()["items"]:
        instance = int(pod["metadata"]["labels"][INSTANCE_LABEL])
        if instance in chosen:
            statuses = pod.get("status", {}).get("containerStatuses") or [{}]
            seen = PodSeen(uid=pod["metadata"]["uid"], restarts=statuses[0].get("restartCount", 0))
            found[instance] = (seen, pod)
    return found


def runs_in_place(p: Pipeline, digest: str) -> bool:
    """Whether every chosen pod runs ``digest`` in place: the pod it was (same UID), its
    container restarted (count one higher) from the new image, running and Ready."""
    assert p.bed is not None
    now = chosen_pods(p.bed, p.chosen)
    if set(now) != set(p.chosen):
        return False
    for instance, (seen, pod) in now.items():
        before = p.pods[instance]
        if seen.uid != before.uid:
            raise RuntimeError(f"instance {instance}'s pod was re-created, not upgraded in place")
        status = pod.get("status", {})
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )
        container = (status.get("containerStatuses") or [{}])[0]
        if not (
            ready
            and container.get("ready")
            and "running" in container.get("state", {})
            and container.get("imageID", "").endswith(f"@{digest}")
            and seen.restarts > before.restarts
        ):
            return False
    return True


# a Go duration as the kubelet prints it ("1.234s", "512.3ms", "1m2.5s")
GO_DURATION = re.compile(r"([0-9.]+)(ns|us|µs|ms|s|m|h)")
GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text: str) -> float:
    return sum(float(n) * GO_UNITS[unit] for n, unit in GO_DURATION.findall(text))


def kubelet_round(p: Pipeline, digest: str) -> dict[str, Any]:
    """The kubelet's own account of the round's pull (its ``Pulling`` and ``Pulled`` events on
    the chosen pods), and the in-place check's baseline moved on to the new containers."""
    assert p.bed is not None
    now = chosen_pods(p.bed, p.chosen)
    for instance, (seen, _) in now.items():
        if seen.restarts != p.pods[instance].restarts + 1:
            raise RuntimeError(
                f"instance {instance} restarted {seen.restarts - p.pods[instance].restarts} "
                "times for one upgrade (a crash besides the image swap?)"
            )
        p.pods[instance] = seen
    namespace = next(iter(now.values()))[1]["metadata"]["namespace"]
    names = {pod["metadata"]["name"] for _, pod in now.values()}
    # the kubelet sends its events in batches: wait for the Pulled of the new digest
    for _ in range(100):
        events = p.bed.kube.get(f"/api/v1/namespaces/{namespace}/events").json()["items"]
        mine = [
            e
            for e in events
            if e["involvedObject"].get("name") in names and f"@{digest}" in e.get("message", "")
        ]
        pulled = [
            e for e in mine if e["reason"] == "Pulled" and "Successfully pulled" in e["message"]
        ]
        pulling = [e for e in mine if e["reason"] == "Pulling"]
        if pulled and pulling:
            break
        time.sleep(0.1)
    else:
        raise RuntimeError(f"no Pulling/Pulled events of {digest} on {sorted(names)}")
    if len(pulled) != 1:  # one node: the first chosen pod pulls, the next finds it present
        raise RuntimeError(f"{len(pulled)} pulls of one image on one node: {pulled}")
    took = re.search(r"\bin ([0-9.a-zµ]+) ", pulled[0]["message"])
    if took is None:
        raise RuntimeError(f"a Pulled event without its duration: {pulled[0]['message']}")
    size = re.search(r"Image size: ([0-9]+) bytes", pulled[0]["message"])

    def stamp(event: dict[str, Any]) -> float:
        return when(event.get("eventTime") or event.get("firstTimestamp"))

    return {
        "pull": go_duration(took.group(1)),
        "pull_span": stamp(pulled[0]) - stamp(pulling[0]),
        "pulled_on": pulled[0]["involvedObject"]["name"],
        "image_mb": int(size.group(1)) / 1e6 if size else math.nan,
        "present_on": sorted(
            e["involvedObject"]["name"]
            for e in mine
            if e["reason"] == "Pulled" and "already present" in e["message"]
        ),
    }


def content_present(p: Pipeline) -> set[str]:
    """The digests in the node's content store now."""
    assert p.bed is not None
    listed = subprocess.run(
        p.bed.ctr("content", "ls", "--quiet"), capture_output=True, text=True, check=True
    )
    return set(listed.stdout.split())


def new_layers_mb(p: Pipeline, reference: str, present: set[str]) -> float:
    """MB of ``reference``'s layers that were not in ``present`` (what its pull had to move)."""
    done = skopeo(
        "inspect", "--raw", "--tls-verify=false", "--creds", f"admin:{p.token}",
        f"docker://{reference}",
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"skopeo inspect {reference}: {done.stderr[-500:]}")
    layers: list[dict[str, Any]] = json.loads(done.stdout)["layers"]
    return sum(int(x["size"]) for x in layers if x["digest"] not in present) / 1e6


def hand_round(p: Pipeline, n: int) -> dict[str, float]:
    """The floor: clone, build and push with the runner's commands and flags, by hand."""
    src = p.hand / "src"
    shutil.rmtree(src, ignore_errors=True)
    cache = p.hand / "cache"
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "HOME": str(p.hand / "home"),
        "TMPDIR": str(p.hand / "tmp"),
        "XDG_DATA_HOME": str(cache / "data"),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "BUILDAH_ISOLATION": "chroot",
    }
    buildah = ["buildah", "--root", str(cache / "storage"), "--runroot", str(cache / "run"),
               "--storage-driver", "overlay"]  # fmt: skip
    image = f"{p.registry}/{BUSINESS}/by-hand:round-{n}"
    auth = f"--authfile={p.hand / 'auth.json'}"
    figures = {
        "clone": timed(
            as_build_user(
                ["git", "-c", "credential.helper=", "clone", "--depth=1", "--single-branch",
                 "--no-tags", "--branch=main", "--", p.bare.as_uri(), str(src)]
            ),
            env=env,
        ),
        "build": timed(
            as_build_user(
                [*buildah, "build", "--layers", "--force-rm", "--isolation", "chroot", auth,
                 "--tls-verify=false", "-f", str(src / "Dockerfile"), "-t", image, str(src)]
            ),
            env=env, cwd=p.hand,
        ),
        "push": timed(
            as_build_user(
                [*buildah, "push", auth, f"--digestfile={p.hand / 'digest'}",
                 "--tls-verify=false", image, f"docker://{image}"]
            ),
            env=env, cwd=p.hand,
        ),
    }  # fmt: skip
    return figures


def pipeline_part(
    args: argparse.Namespace,
    work: Path,
    *,
    origin: str,
    gaia_host: str,
    token: str,
    bed: KubeletBed | None = None,
) -> dict[str, Any]:
    p = set_up_pipeline(
        work, origin=origin, registry=gaia_host, token=token, app_mb=args.app_mb, bed=bed
    )
    where = "a sim cluster" if bed is None else f"a real kubelet node ({bed.node.name})"
    print(
        f"app '{APP}': 3 instances on {where}, the pipeline upgrades {p.chosen}; "
        f"each commit changes {args.app_mb:g} MB of the app's files; "
        f"runner poll interval {args.runner_interval:g} s "
        "(GAIA_PIPELINE_RUNNER_INTERVAL_SECONDS), "
        f"app controller pass every 1 s; {args.pipeline_rounds} rounds after 1 warm-up"
    )
    gaia: list[dict[str, Any]] = []
    hand: list[dict[str, float]] = []
    for n in range(args.pipeline_rounds + 1):
        commit(p.source, n + 1, args.app_mb)
        git("commit", "-q", "-a", "-m", f"round {n + 1}", cwd=p.source)
        sha = git("rev-parse", "HEAD", cwd=p.source)
        pushed = timed(["git", "-C", str(p.source), "push", "-q", "origin", "main"])
        present = content_present(p) if bed is not None else set()
        if n % 2 == 0:
            g = gaia_round(p, sha)
            h = hand_round(p, n)
        else:
            h = hand_round(p, n)
            g = gaia_round(p, sha)
        if bed is not None:  # what each pull had to move: the layers the node lacked before it
            g["pull_mb"] = new_layers_mb(p, f"{gaia_host}/{BUSINESS}/{APP}@{g['digest']}", present)
            by_hand = f"{gaia_host}/{BUSINESS}/by-hand:round-{n}"
            h["pull_mb"] = new_layers_mb(p, by_hand, content_present(p))
            # the floor's pull is a process: its start and first call to containerd, apart
            h["ctr_start"] = timed(bed.ctr("version"))
        h["pull"] = hand_pull(p, n, str(g["digest"]))
        g["git_push"] = h["git_push"] = pushed
        h["to_image"] = pushed + h["clone"] + h["build"] + h["push"]
        h["to_running"] = h["to_image"] + h["pull"]
        g["to_image"] += pushed
        g["to_running"] += pushed
        label = "warm-up" if n == 0 else f"round {n}"
        pull = (
            f"(sim pull {g['sim_pull']:.2f})"
            if bed is None
            else f"(kubelet pull {g['pull']:.2f}, events {g['pull_span']:.0f} s, "
            f"{g['pull_mb']:.1f} MB new)"
        )
        hand_pulled = f"{h['pull']:.2f}" + ("" if bed is None else f" ({h['pull_mb']:.1f} MB new)")
        print(
            f"{label:8} gaia: queue {g['queue']:.2f} clone {g['clone']:.2f} build {g['build']:.2f} "
            f"push {g['push']:.2f} deploy {g['deploy']:.2f} upgrade {g['upgrade']:.2f} "
            f"{pull} -> running {g['to_running']:.2f} s | by hand: "
            f"clone {h['clone']:.2f} build {h['build']:.2f} push {h['push']:.2f} "
            f"pull {hand_pulled} | {load()}"
        )
        if n > 0:
            gaia.append(g)
            hand.append(h)
    table(gaia, hand, real=bed is not None)
    if p.pods:
        print(
            "in place: "
            + ", ".join(
                f"instance {i}: pod uid {seen.uid[:8]}... unchanged, {seen.restarts} restarts"
                for i, seen in sorted(p.pods.items())
            )
            + f" after {args.pipeline_rounds + 1} upgrades (warm-up included)"
        )
    return {
        "cluster": "sim" if bed is None else "kubelet",
        "gaia": gaia,
        "by_hand": hand,
        "chosen": p.chosen,
        "app_mb": args.app_mb,
    }


def hand_pull(p: Pipeline, n: int, digest: str) -> float:
    """On the sim: the real pull of Gaia's new image into an OCI layout kept across rounds (a
    node's content store: the base and unchanged layers are there, only the new ones move).
    On the real node: ``ctr images pull`` of the by-hand image of the same commit by the node's
    containerd (Gaia's is in its store already: the kubelet pulled it)."""
    if p.bed is not None:
        image = f"{p.registry}/{BUSINESS}/by-hand:round-{n}"
        return timed(
            p.bed.ctr("images", "pull", f"--hosts-dir={p.bed.hosts_dir}",
                      f"--user=admin:{p.token}", image)
        )  # fmt: skip
    source = f"docker://{p.registry}/{BUSINESS}/{APP}@{digest}"
    store = f"oci:{p.hand / 'node-store'}:run-{n}"
    creds = ["--src-tls-verify=false", "--src-creds", f"admin:{p.token}"]
    return timed(["skopeo", "copy", *creds, source, store])


def table(gaia: list[dict[str, Any]], hand: list[dict[str, float]], *, real: bool) -> None:
    def median(rows: list[dict[str, Any]], key: str) -> float | None:
        values = [r[key] for r in rows if key in r and not math.isnan(r[key])]
        return statistics.median(values) if values else None

    upgrade_row = (
        ("upgrade of 2 (real kubelet, in place)", "upgrade", None)
        if real
        else ("upgrade of 2 instances (sim cluster)", "upgrade", None)
    )
    pull_row = (
        ("pull (kubelet's event | ctr pull)", "pull", "pull") if real else ("pull", None, "pull")
    )
    rows = [
        ("git push (to the bare repo)", "git_push", "git_push"),
        ("webhook (POST -> 202)", "webhook", None),
        ("queue (202 -> run claimed)", "queue", None),
        ("prepare (claimed -> clone)", "prepare", None),
        ("clone", "clone", "clone"),
        ("build", "build", "build"),
        ("push", "push", "push"),
        ("between steps (log flush)", "gaps", None),
        ("record + deploy (new version, upgrade)", "deploy", None),
        upgrade_row,
        pull_row,
        ("total: push -> image in registry", "to_image", "to_image"),
        ("total: push -> running", "to_running", "to_running"),
    ]
    if real:
        rows.insert(11, ("Gaia's API sees it (after the pods)", "gaia_sees", None))
    print()
    print(f"{'step':40} | {'Gaia median':>11} | {'by hand median':>14} | overhead")
    print(f"{'-' * 40}-|-{'-' * 11}-|-{'-' * 14}-|-{'-' * 16}")
    for name, g_key, h_key in rows:
        g = median(gaia, g_key) if g_key else None
        h = median(hand, h_key) if h_key else None
        g_text = f"{g:9.2f} s" if g is not None else "not measured"
        h_text = f"{h:12.2f} s" if h is not None else "-"
        over = ""
        if g is not None and h is not None and h > 0:
            over = f"{g - h:+.2f} s ({100 * (g / h - 1):+.0f} %)"
        elif g is not None:
            over = "Gaia only"
        elif h is not None:
            over = "not measured on sim"
        print(f"{name:40} | {g_text:>11} | {h_text:>14} | {over}")
    if real:
        real_notes(gaia, hand, median)
    else:
        sim_notes(gaia, median)
    hand_total = median(hand, "to_running")
    print(
        "the by-hand total is git push + clone + build + push + pull (no upgrade orchestration: "
        "the floor); Gaia's adds the queue, the deploy and the gray upgrade of "
        "2 instances one at a time (max_unavailable 1), each a controller pass (1 s) away"
        if hand_total is not None
        else ""
    )


def sim_notes(gaia: list[dict[str, Any]], median: Any) -> None:
    sim = median(gaia, "sim_pull")
    print(
        "pull: on the sim cluster the pull is simulated (made-up layer sizes at 10 Gbit/s), so "
        f"Gaia's is not measured; the sim reported {sim:.2f} s. By hand: skopeo copy of the new "
        "image into an OCI layout holding the earlier versions (a node's store)."
        if sim is not None
        else "pull: simulated on the sim cluster; not measured"
    )
    upgrade = median(gaia, "upgrade")
    if upgrade is not None and sim is not None:
        simulated = len(gaia[0]["chosen"]) * (SIM_KUBELET_S + sim)
        print(
            f"upgrade: {upgrade:.2f} s, of which the sim's simulated kubelet steps and pulls "
            f"(watch 0.05 + create 0.2 + start 0.3 + pull, per instance, one at a time) "
            f"{simulated:.2f} s; the rest, {upgrade - simulated:.2f} s, is the app controller's "
            "passes (every 1 s) and the bench's 0.1 s poll"
        )


def real_notes(gaia: list[dict[str, Any]], hand: list[dict[str, Any]], median: Any) -> None:
    pull, span = median(gaia, "pull"), median(gaia, "pull_span")
    moved, hand_moved = median(gaia, "pull_mb"), median(hand, "pull_mb")
    ctr_start = median(hand, "ctr_start")
    if None in (pull, span, moved, hand_moved, ctr_start):
        return
    print(
        f"pull: Gaia's is the kubelet's own figure (its Pulled event: 'Successfully pulled "
        f"image ... in <d>'), {moved:.1f} MB of new layers (median); the span between its "
        f"Pulling and Pulled events' timestamps (whole seconds) was {span:.0f} s. By hand: "
        f"ctr images pull of the by-hand image of the same commit ({hand_moved:.1f} MB new) by "
        "the node's containerd, same hosts.toml and content store, unpacked as the kubelet's "
        f"is; its wall time includes starting ctr ('ctr version': {ctr_start:.2f} s), which the "
        "kubelet's own timer has no counterpart of."
    )
    upgrade = median(gaia, "upgrade")
    if upgrade is not None:
        print(
            f"upgrade: {upgrade:.2f} s from the run's end to both chosen pods running the new "
            "digest in place (same pod UID, container restarted once, Ready), one instance at "
            f"a time: per instance a controller pass (every 1 s), the in-place image patch, the "
            f"kubelet stopping the old container, the pull (first instance only: {pull:.2f} s), "
            "starting the new one and its readiness probe (every 1 s)"
        )


def registry_part(
    args: argparse.Namespace, work: Path, *, origin: str, gaia_host: str, token: str
) -> dict[str, Any]:
    """Concurrent pulls behind Gaia's token auth against the bare registry."""
    image = random_image(args.layers, int(args.layer_mb * 1e6), seed=7)
    size = sum(len(x.blob.data) for x in image.layers) + len(image.config().data)
    layout = oci_layout(image, work / "layout")
    bare = Registry(work / "bare").start()
    try:
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
    finally:
        bare.stop()
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
    with httpx.Client(base_url=origin, timeout=30, auth=("admin", token)) as client:
        for _ in range(args.tokens):
            began = time.perf_counter()
            answer = client.get(
                "/api/v1/registry/token",
                params={"service": "gaia-registry", "scope": f"repository:{REPO}:pull"},
            )
            answer.raise_for_status()
            latencies.append(time.perf_counter() - began)
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p95 = latencies[int(len(latencies) * 0.95)] * 1000
    print(f"token endpoint: p50 {p50:.1f} ms, p95 {p95:.1f} ms ({args.tokens} requests)")
    return {
        "times": times,
        "mb_per_s": rate,
        "overhead": overhead,
        "token_p50_ms": p50,
        "token_p95_ms": p95,
        "image_bytes": size,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part",
        choices=("all", "registry", "pipeline"),
        help="default: all on the sim; pipeline with --cluster kubelet (the registry half does "
        "not involve a cluster)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds of both parts")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--layer-mb", type=float, default=32.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument(
        "--pipeline-rounds", type=int, default=5, help="counted rounds (after one warm-up)"
    )
    parser.add_argument(
        "--app-mb", type=float, default=8.0, help="the app's files that change every commit"
    )
    parser.add_argument(
        "--runner-interval",
        type=float,
        default=2.0,
        help="GAIA_PIPELINE_RUNNER_INTERVAL_SECONDS (Gaia's default: 2)",
    )
    parser.add_argument(
        "--cluster",
        choices=("sim", "kubelet"),
        default="sim",
        help="where the pipeline deploys: the simulated cluster, or a real kubelet node on a "
        "control plane of the bench's own (root; scripts/build-control-plane.sh)",
    )
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    if args.part is None:
        args.part = "pipeline" if args.cluster == "kubelet" else "all"
    if args.quick:
        args.rounds, args.tokens, args.pipeline_rounds = 2, 50, 2
    work = Path(tempfile.mkdtemp(prefix="gaia-cicd-bench-"))
    work.chmod(0o755)  # Gaia's build user (and the floor's) reach the builds and the repository
    figures: dict[str, Any] = {}
    print(f"load before: {load()}")
    try:
        with contextlib.ExitStack() as stack:
            bed = None
            if args.cluster == "kubelet" and args.part in ("all", "pipeline"):
                bed = stack.enter_context(kubelet_bed(work))
                print(f"real node {bed.node.name} Ready (start steps, s: {bed.node.timings})")
            origin, gaia_host, token = stack.enter_context(
                gaia_with_registry(work, runner_interval=args.runner_interval)
            )
            if args.part in ("all", "registry"):
                print("== registry: concurrent pulls behind Gaia's token auth ==")
                figures["registry"] = registry_part(
                    args, work, origin=origin, gaia_host=gaia_host, token=token
                )
                print(f"load: {load()}")
            if args.part in ("all", "pipeline"):
                print("== pipeline: git push -> new version running, by step ==")
                figures["pipeline"] = pipeline_part(
                    args, work, origin=origin, gaia_host=gaia_host, token=token, bed=bed
                )
                print(f"load after: {load()}")
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=1, default=str))
    finally:
        # overlay mounts left under the layer caches (by a build killed mid-way) must go
        # before their folders can
        subprocess.run(
            ["sh", "-c", f"grep -o ' {work}/[^ ]*' /proc/mounts | sort -r | xargs -r umount"],
            capture_output=True, check=False, timeout=60,
        )  # fmt: skip
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
