"""A real worker node for the tests: kubelet + containerd + runc, on this machine.

KWOK nodes run nothing, so logs, exec, mounted configs, probes and the kubelet's events are not
real on them. ``start_real_node(plane, work)`` joins a real node to a running ``ControlPlane``:

1. **registry**: Debian's ``docker-registry`` on 127.0.0.1:<free port>, filesystem storage in
   the work folder. ``tests/support/images.py`` pushes busybox-based images to it: ``gaia/web``
   ``v1`` and ``v2`` and the sandbox image ``gaia/pause``. Image references name it
   ``registry.gaia.test`` (containerd's ``hosts.toml`` maps that name to the port, plain http),
   so references read the same on every run.
2. **containerd** (Debian's 1.6) with its own config, root, state and socket; the CRI plugin
   with the overlayfs snapshotter, runc with cgroupfs, our pause image as the sandbox image and
   a CNI folder of our own: Debian's plugins (``bridge``, ``loopback``...) linked from
   ``/usr/lib/cni`` plus ``gaia-ipam`` (``gaia/node/ipam.py``: a pod keeps its IP when it is
   recreated under the same name). The network is a ``bridge`` with the node as gateway.
3. **kubelet** (v1.37, built by ``scripts/build-control-plane.sh``) with a client certificate
   for ``system:node:<name>`` in ``system:nodes`` (so the apiserver's Node authorizer and
   NodeRestriction apply), serving TLS for the node IP signed by the control plane's CA, x509
   client authentication only (the apiserver's kubelet client certificate) and ``Webhook``
   authorisation: the kubelet asks the apiserver (SubjectAccessReview) whether a caller may use
   ``nodes/proxy``, ``nodes/log``..., as a kubeadm node does, rather than trusting every holder
   of a certificate from the CA. cgroup v1 is allowed explicitly (``failCgroupV1: false``).
4. Once the node is Ready, **FAKE GPUs**: there is no GPU here; the node's status gets
   ``nvidia.com/gpu`` and ``gaia.io/gpu-memory`` as extended resources (the documented way to
   advertise node-level resources; the kubelet keeps them), with the model label and topology
   annotation ``fake_node()`` uses, and the label ``gaia.io/fake-gpus: "true"``.

Several nodes can run at once (a test module's and a session's, on two control planes): each
takes a **slot** (an ``fcntl`` lock under ``/run/gaia-test-nodes``) that names its bridge
(``gaia-test<slot>``), its pod subnet (``10.244.<4 * slot>.0/22``; KWOK's fake pod IPs are
10.128.0.0/12 and services 10.0.0.0/24) and its cgroup (``/gaia-test-node-<slot>`` in every
cgroup v1 hierarchy: ``daemons`` holds registry, containerd, its shims and the kubelet;
``pods`` is the kubelet's ``cgroupRoot``). ``stop()`` stops the kubelet, kills and removes the
containers through containerd (``ctr task kill``), ends the daemons, kills whatever is left in
the slot's cgroup, removes the pods' network namespaces and the bridge, unmounts what the
kubelet and containerd mounted and removes the cgroups, so the next start in the same VM begins
clean. A slot left behind by a crashed test session is cleaned the same way when it is taken
again. Anything that cannot start raises ``RealNodeUnavailable`` with the tail of that
component's log.

What the kubelet changes on the host beyond that: kernel settings (``vm.overcommit_memory``,
``kernel.panic``...; saved before the first node starts and put back when the last one stops),
its iptables canary chains and ``KUBE-FIREWALL`` rule (kept; it re-adds them anyway) and the
empty ``/var/lib/kubelet/device-plugins`` folder (a path it hard-codes). Where root lacks
``CAP_SYS_RESOURCE`` (this VM), no OOM score can be lowered, so containerd clamps the kubelet's
negative scores to its own (``restrict_oom_score_adj``).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
import yaml
from cryptography import x509

from tests.support.images import (
    ImageBuildError,
    RegistryClient,
    pause_image,
    web_image,
)
from tests.support.kube import (
    ROOT,
    ControlPlane,
    ControlPlaneUnavailable,
    Process,
    free_port,
    wait_for_process,
)

SLOTS = Path("/run/gaia-test-nodes")
MAX_SLOTS = 16
CGROUP_V1 = Path("/sys/fs/cgroup")
REQUIRED_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids")
DEBIAN_CNI = Path("/usr/lib/cni")
REGISTRY_HOST = "registry.gaia.test"
WEB_REPOSITORY = "gaia/web"
PAUSE_REPOSITORY = "gaia/pause"
# a deleted pod's address stays reserved this long; a /22 holds ~1,000 addresses, which a
# contract suite's many short-lived pods (one namespace per test) must not use up
IP_KEEP_S = 300
CLUSTER_DNS = "10.0.0.10"  # inside the control plane's service range; nothing answers there
PACKAGES = "containerd runc containernetworking-plugins docker-registry busybox-static"
MNT_DETACH = 2
# what the kubelet sets at start (container_manager_linux.go, setupKernelTunables); put back
# when the last node of this machine stops
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
SYSCTL_BACKUP = SLOTS / "sysctls-before-kubelet.json"
# the kubelet's device plugin folder and its registration socket (v1beta1 constants.go): the
# same for every kubelet on the machine, whatever its --root-dir
DEVICE_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
KUBELET_SOCKET = DEVICE_PLUGIN_DIR / "kubelet.sock"
# ...and the device manager's checkpoint in that same folder, shared by every kubelet here: it
# names the resources device plugins registered, and a kubelet that starts with it takes those
# resources for its own plugins' (unhealthy until they register), overriding the fake GPUs the
# harness advertises (nvidia.com/gpu allocatable 0)
KUBELET_CHECKPOINT = DEVICE_PLUGIN_DIR / "kubelet_internal_checkpoint"
CAP_SYS_RESOURCE = 24

FAKE_GPU_LINKS = (
    ("X", "PIX", "SYS", "SYS"),
    ("PIX", "X", "SYS", "SYS"),
    ("SYS", "SYS", "X", "PIX"),
    ("SYS", "SYS", "PIX", "X"),
)


class RealNodeUnavailable(ControlPlaneUnavailable):
    """The real node could not start; the message says which part and why."""


@dataclass(frozen=True)
class FakeGpus:
    """GPUs advertised on the node that do not exist (no GPU, driver or device plugin here):
    extended resources, a model label and an ``nvidia-smi topo -m`` link matrix."""

    links: tuple[tuple[str, ...], ...] = FAKE_GPU_LINKS
    model: str = "FAKE-GPU-16G"
    memory_mib: int = 16384

    @property
    def count(self) -> int:
        return len(self.links)

    def resources(self) -> dict[str, str]:
        return {
            "nvidia.com/gpu": str(self.count),
            "gaia.io/gpu-memory": str(self.count * self.memory_mib),
        }

    def metadata(self) -> dict[str, Any]:
        return {
            "labels": {"gaia.io/gpu-model": self.model, "gaia.io/fake-gpus": "true"},
            "annotations": {"gaia.io/gpu-topology": json.dumps([list(r) for r in self.links])},
        }


@dataclass(frozen=True)
class NodeImages:
    """References (``registry.gaia.test/...``) of the images pushed when the node started."""

    web_v1: str
    web_v2: str
    pause: str


# ---------------------------------------------------------------------------- the slot


@dataclass
class NodeSlot:
    index: int
    lock: TextIO

    @property
    def bridge(self) -> str:
        return f"gaia-test{self.index}"

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(f"10.244.{4 * self.index}.0/22")

    @property
    def run_dir(self) -> Path:
        return SLOTS / str(self.index)

    @property
    def cgroup(self) -> str:
        return f"gaia-test-node-{self.index}"

    @classmethod
    def take(cls) -> NodeSlot:
        SLOTS.mkdir(parents=True, exist_ok=True)
        for index in range(MAX_SLOTS):
            lock = (SLOTS / f"{index}.lock").open("a")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            return cls(index, lock)
        raise RealNodeUnavailable(f"all {MAX_SLOTS} node slots under {SLOTS} are in use")

    def release(self) -> None:
        self.lock.close()


# ---------------------------------------------------------------------------- cgroups (v1)


def cgroup_hierarchies() -> dict[str, Path]:
    """The mounted cgroup v1 hierarchies, by controller (and ``name=...`` for named ones)."""
    found: dict[str, Path] = {}
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mount_point, kind, options, *_ = line.split()
        if kind != "cgroup":
            continue
        for option in options.split(","):
            if option in _KNOWN_CONTROLLERS or option.startswith("name="):
                found[option] = Path(mount_point)
    return found


_KNOWN_CONTROLLERS = {
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "hugetlb",
    "net_cls", "net_prio", "perf_event", "rdma", "misc",
}  # fmt: skip


@dataclass
class SlotCgroups:
    """The slot's cgroup in every v1 hierarchy, with ``daemons`` and ``pods`` below it."""

    name: str
    hierarchies: list[Path]
    tracker: Path  # the pids hierarchy: where every process of the node can be found

    @classmethod
    def for_slot(cls, slot: NodeSlot) -> SlotCgroups:
        if (CGROUP_V1 / "cgroup.controllers").exists():
            raise RealNodeUnavailable(
                "this host runs cgroup v2 only; tests/support/node.py drives cgroup v1 hosts"
            )
        by_controller = cgroup_hierarchies()
        missing = [c for c in REQUIRED_CONTROLLERS if c not in by_controller]
        if missing:
            raise RealNodeUnavailable(f"cgroup v1 controllers not mounted: {', '.join(missing)}")
        return cls(
            name=slot.cgroup,
            hierarchies=sorted(set(by_controller.values())),
            tracker=by_controller["pids"] / slot.cgroup,
        )

    @property
    def pods_root(self) -> str:
        return f"/{self.name}/pods"

    def create(self) -> None:
        for hierarchy in self.hierarchies:
            for part in (self.name, f"{self.name}/daemons", f"{self.name}/pods"):
                path = hierarchy / part
                path.mkdir(exist_ok=True)
                if (path / "cpuset.cpus").exists():
                    # a new cpuset cgroup starts with no cpus and mems: no task could join it
                    for knob in ("cpuset.cpus", "cpuset.mems"):
                        (path / knob).write_text((path.parent / knob).read_text())

    def enter(self, argv: list[str]) -> list[str]:
        """``argv`` run inside ``daemons``: the shell joins the cgroup, then execs."""
        procs = self.tracker / "daemons" / "cgroup.procs"
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs), *argv]

    def pids(self) -> set[int]:
        if not self.tracker.exists():
            return set()
        found: set[int] = set()
        for procs in self.tracker.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                found.update(int(p) for p in procs.read_text().split())
        return found

    def kill_all(self, timeout_s: float = 10) -> None:
        deadline = time.monotonic() + timeout_s
        while (left := self.pids()) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def remove(self) -> list[Path]:
        """Remove the slot's cgroups, deepest first; the ones that would not go."""
        stuck: list[Path] = []
        for hierarchy in self.hierarchies:
            top = hierarchy / self.name
            if not top.exists():
                continue
            for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=_depth, reverse=True):
                with contextlib.suppress(OSError):
                    path.rmdir()
            try:
                top.rmdir()
            except OSError:
                stuck.append(top)
        return stuck


def _depth(path: Path) -> int:
    return len(path.parts)


# ---------------------------------------------------------------------------- host cleanup


def mounts_under(*roots: Path) -> list[str]:
    """Mount points at or below ``roots``, deepest first."""
    found = []
    prefixes = [str(r.resolve()) for r in roots]
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if any(point == p or point.startswith(p + "/") for p in prefixes):
            found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"), reverse=True)


def unmount(point: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.umount2(point.encode(), MNT_DETACH)


def _ip_json(*args: str) -> list[dict[str, Any]]:
    done = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        return []
    parsed: list[dict[str, Any]] = json.loads(done.stdout)
    return parsed


def remove_pod_netns(bridge: str) -> None:
    """Delete the network namespaces whose ``eth0`` is plugged into ``bridge``: the pods of this
    node (containerd names them ``/run/netns/cni-*``; other nodes' stay)."""
    ports = {link["ifindex"] for link in _ip_json("link", "show", "master", bridge)}
    netns_dir = Path("/run/netns")
    if not ports or not netns_dir.exists():
        return
    for netns in netns_dir.glob("cni-*"):
        links = _ip_json("-n", netns.name, "link", "show")
        if any(link.get("link_index") in ports for link in links):
            unmount(str(netns))
            with contextlib.suppress(OSError):
                netns.unlink()


def forget_cni_results(network: str) -> None:
    """Drop libcni's cached results of this network's sandboxes (and their loopback's), which
    stay behind when sandboxes are killed rather than torn down through CNI DEL."""
    cache = Path("/var/lib/cni/results")
    for result in cache.glob(f"{network}-*-eth0"):
        container = result.name.removeprefix(f"{network}-").removesuffix("-eth0")
        for path in (result, cache / f"cni-loopback-{container}-lo"):
            path.unlink(missing_ok=True)


def remove_bridge(bridge: str) -> None:
    if _ip_json("link", "show", bridge):
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, check=False)


def save_sysctls() -> None:
    """Remember the kernel settings the kubelet changes, unless a node already did."""
    if SYSCTL_BACKUP.exists():
        return
    values = {}
    for name in KUBELET_SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = (Path("/proc/sys") / name).read_text().strip()
    SYSCTL_BACKUP.write_text(json.dumps(values))


def restore_sysctls_unless_in_use(own: SlotCgroups) -> None:
    """Put the saved kernel settings back when no other node's cgroup remains."""
    others = [p for p in own.tracker.parent.glob("gaia-test-node-*") if p != own.tracker]
    if others or not SYSCTL_BACKUP.exists():
        return
    for name, value in json.loads(SYSCTL_BACKUP.read_text()).items():
        with contextlib.suppress(OSError):
            (Path("/proc/sys") / name).write_text(value)
    SYSCTL_BACKUP.unlink()


def node_ip() -> str:
    """The first global IPv4 address that is not a test bridge's: the kubelet refuses a
    loopback node IP, and the apiserver reaches the kubelet on this address."""
    for link in _ip_json("-4", "addr", "show", "scope", "global"):
        if link.get("ifname", "").startswith("gaia-test"):
            continue
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                return str(info["local"])
    raise RealNodeUnavailable("no global IPv4 address on this machine to use as the node IP")


# ---------------------------------------------------------------------------- the node


@dataclass
class RealNode:
    plane: ControlPlane
    work: Path
    name: str
    slot: NodeSlot
    cgroups: SlotCgroups
    gpus: FakeGpus = field(default_factory=FakeGpus)
    advertise_gpus: bool = True  # False: a device plugin (the test's) advertises them
    ip: str = ""
    processes: list[Process] = field(default_factory=list)
    registry_url: str = ""
    kubelet_port: int = 0
    _registry: RegistryClient | None = None
    _images: NodeImages | None = None
    timings: dict[str, float] = field(default_factory=dict)
    _fresh: int = 0

    # -- paths ---------------------------------------------------------------------------

    @property
    def containerd_socket(self) -> Path:
        return self.slot.run_dir / "containerd.sock"

    @property
    def kubelet_dir(self) -> Path:
        return self.work / "kubelet"

    @property
    def pod_logs_dir(self) -> Path:
        return self.work / "pod-logs"

    @property
    def ipam_dir(self) -> Path:
        return self.work / "ipam"

    # -- images --------------------------------------------------------------------------

    @property
    def registry(self) -> RegistryClient:
        if self._registry is None:
            raise RealNodeUnavailable("the node's registry is not running")
        return self._registry

    @property
    def images(self) -> NodeImages:
        if self._images is None:
            raise RealNodeUnavailable("the node's images are not pushed yet")
        return self._images

    def fresh_images(self, prefix: str) -> tuple[str, str]:
        """Two references of ``gaia/web`` (versions v1 and v2) under tags no one has pulled:
        ``<prefix>-v1`` and ``<prefix>-v2`` (``<prefix>.<n>-...`` if the prefix was used)."""
        self._fresh += 1
        stem = prefix if self._fresh == 1 else f"{prefix}.{self._fresh}"
        return (
            self.registry.tag(repository=WEB_REPOSITORY, source="v1", tag=f"{stem}-v1"),
            self.registry.tag(repository=WEB_REPOSITORY, source="v2", tag=f"{stem}-v2"),
        )

    def web(self, version: str) -> str:
        """A reference of ``gaia/web:<version>``, pushed if needed (the version is baked in)."""
        return self.registry.push(web_image(version), repository=WEB_REPOSITORY, tag=version)

    # -- lifecycle -----------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Process:
        log = self.work / f"{name}.log"
        with log.open("ab") as handle:
            popen = subprocess.Popen(
                self.cgroups.enter(argv),
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        process = Process(name, popen, log)
        self.processes.append(process)
        return process

    def _wait(
        self, process: Process, probe: Callable[[], bool], what: str, timeout_s: float
    ) -> None:
        wait_for_process(process, probe, what, timeout_s, error=RealNodeUnavailable)

    def _timed(self, step: str, started: float) -> None:
        self.timings[step] = round(time.monotonic() - started, 2)

    def start(self, *, timeout_s: float = 120) -> RealNode:
        begun = time.monotonic()
        self.work.mkdir(parents=True, exist_ok=True)
        self.ip = self.ip or node_ip()
        self._clean_host()
        self.slot.run_dir.mkdir(parents=True, exist_ok=True)
        (self.slot.run_dir / "work").write_text(str(self.work))
        self.cgroups.create()
        save_sysctls()
        self._start_registry(timeout_s)
        self._timed("registry", begun)
        self._push_images()
        self._timed("images", begun)
        self._start_containerd(timeout_s)
        self._timed("containerd", begun)
        if self.advertise_gpus:
            # a device plugin test's checkpoint must not make this kubelet's fake GPUs its own
            KUBELET_CHECKPOINT.unlink(missing_ok=True)
        self._start_kubelet(timeout_s)
        self._timed("ready", begun)
        if self.advertise_gpus:
            self._advertise_fake_gpus()
            self._timed("gpus", begun)
        return self

    def restart_kubelet(self, *, timeout_s: float = 120) -> None:
        """Stop the kubelet and start it again, as an upgrade or a crash would; returns once the
        new kubelet's device manager serves (a new ``kubelet.sock``) and the node is Ready."""
        by_name = {p.name: p for p in self.processes}
        before = _socket_identity(KUBELET_SOCKET)
        if "kubelet" in by_name:
            _terminate(by_name["kubelet"])
            self.processes.remove(by_name["kubelet"])
        self._start_kubelet(timeout_s)
        process = next(p for p in self.processes if p.name == "kubelet")
        self._wait(
            process,
            lambda: _socket_identity(KUBELET_SOCKET) not in (None, before),
            "a new device plugin socket",
            timeout_s,
        )

    def _start_registry(self, timeout_s: float) -> None:
        port = free_port()
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.work / "registry")},
                "delete": {"enabled": True},
            },
            "http": {"addr": f"127.0.0.1:{port}", "secret": os.urandom(16).hex()},
        }
        path = self.work / "registry.yaml"
        path.write_text(yaml.safe_dump(config))
        process = self._spawn("registry", [_need("docker-registry"), "serve", str(path)])
        url = f"http://127.0.0.1:{port}"
        self._wait(
            process,
            lambda: httpx.get(f"{url}/v2/", timeout=2).status_code == 200,
            "serving",
            timeout_s,
        )
        self._registry = RegistryClient(url=url, host=REGISTRY_HOST)
        self.registry_url = url

    def _push_images(self) -> None:
        try:
            self._images = NodeImages(
                web_v1=self.web("v1"),
                web_v2=self.web("v2"),
                pause=self.registry.push(pause_image(), repository=PAUSE_REPOSITORY, tag="1"),
            )
        except (ImageBuildError, httpx.HTTPError) as exc:
            raise RealNodeUnavailable(f"could not push the test images: {exc}") from exc

    def _cni_bin_dir(self) -> Path:
        """Debian's CNI plugins, and ``gaia-ipam`` running this checkout's ``gaia.node.ipam``
        with this interpreter: containerd runs plugins with its own (small) environment."""
        bin_dir = self.work / "cni" / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        for plugin in DEBIAN_CNI.iterdir():
            if not (bin_dir / plugin.name).is_symlink():
                (bin_dir / plugin.name).symlink_to(plugin)
        ipam = bin_dir / "gaia-ipam"
        ipam.write_text(
            "#!/bin/sh\n"
            f"PYTHONPATH={_sh(str(ROOT))} exec {_sh(sys.executable)} -P -m gaia.node.ipam\n"
        )
        ipam.chmod(0o755)
        return bin_dir

    def _cni_conf_dir(self) -> Path:
        conf_dir = self.work / "cni" / "net.d"
        conf_dir.mkdir(parents=True, exist_ok=True)
        network = {
            "cniVersion": "1.0.0",
            "name": self.slot.bridge,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.slot.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "ipam": {
                        "type": "gaia-ipam",
                        "subnet": str(self.slot.subnet),
                        "dataDir": str(self.ipam_dir),
                        "keep_s": IP_KEEP_S,
                    },
                }
            ],
        }
        (conf_dir / "10-gaia.conflist").write_text(json.dumps(network, indent=1))
        return conf_dir

    def _containerd_config(self) -> Path:
        hosts = self.work / "containerd" / "certs.d" / REGISTRY_HOST
        hosts.mkdir(parents=True, exist_ok=True)
        # containerd 1.6 rejects a hosts.toml without a [host] table ("invalid `host` tree")
        (hosts / "hosts.toml").write_text(
            f"server = {_toml(self.registry_url)}\n\n"
            f"[host.{_toml(self.registry_url)}]\n"
            '  capabilities = ["pull", "resolve"]\n'
        )
        cri = '[plugins."io.containerd.grpc.v1.cri"'
        lines = [
            "version = 2",
            f"root = {_toml(str(self.work / 'containerd' / 'root'))}",
            f"state = {_toml(str(self.slot.run_dir / 'containerd'))}",
            "disabled_plugins = " + json.dumps(_UNUSED_CONTAINERD_PLUGINS),
            "[grpc]",
            f"  address = {_toml(str(self.containerd_socket))}",
            "[ttrpc]",
            f"  address = {_toml(str(self.containerd_socket) + '.ttrpc')}",
            "[metrics]",
            '  address = ""',
            '[plugins."io.containerd.internal.v1.opt"]',
            f"  path = {_toml(str(self.work / 'containerd' / 'opt'))}",
            f"{cri}]",
            f"  sandbox_image = {_toml(self.images.pause)}",
            '  stream_server_address = "127.0.0.1"',
            '  stream_server_port = "0"',
            "  enable_selinux = false",
            "  disable_apparmor = true",
            # without CAP_SYS_RESOURCE (this VM's root lacks it) no one may lower an OOM score:
            # runc would fail on the kubelet's -998 for sandboxes, so containerd clamps it
            f"  restrict_oom_score_adj = {_toml_bool(not _has_capability(CAP_SYS_RESOURCE))}",
            f"{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f"{cri}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"{cri}.containerd.runtimes.runc.options]",
            "  SystemdCgroup = false",
            f"  BinaryName = {_toml(_need('runc'))}",
            f"  Root = {_toml(str(self.slot.run_dir / 'runc'))}",
            f"{cri}.cni]",
            f"  bin_dir = {_toml(str(self._cni_bin_dir()))}",
            f"  conf_dir = {_toml(str(self._cni_conf_dir()))}",
            "  max_conf_num = 1",
            f"{cri}.registry]",
            f"  config_path = {_toml(str(hosts.parent))}",
        ]
        path = self.work / "containerd.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _start_containerd(self, timeout_s: float) -> None:
        config = self._containerd_config()
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        process = self._spawn(
            "containerd", [_need("containerd"), f"--config={config}", "--log-level=warn"], env
        )
        self._wait(process, lambda: self._ctr("version").returncode == 0, "serving", timeout_s)

    def _ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", f"--address={self.containerd_socket}", "--namespace=k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def _kubelet_files(self) -> tuple[Path, Path]:
        """The kubelet's certificates, kubeconfig, resolv.conf and configuration file."""
        files = self._kubelet_pki()
        kubeconfig = self.kubelet_dir / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump(self._kubeconfig(files)))
        resolv = self.kubelet_dir / "resolv.conf"
        resolv.write_text(f"nameserver {CLUSTER_DNS}\n")
        self.kubelet_port = free_port()
        config = self.kubelet_dir / "config.yaml"
        config.write_text(yaml.safe_dump(self._kubelet_config(files, resolv)))
        return config, kubeconfig

    def _kubelet_pki(self) -> Path:
        pki = self.plane.pki
        files = self.kubelet_dir / "pki"
        files.mkdir(parents=True, exist_ok=True)
        client = pki.issue(f"system:node:{self.name}", org="system:nodes")
        serving = pki.issue(
            self.name,
            usage=x509.oid.ExtendedKeyUsageOID.SERVER_AUTH,
            sans=[
                x509.DNSName(self.name),
                x509.IPAddress(ipaddress.ip_address(self.ip)),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ],
        )
        for name, data in {
            "ca.crt": pki.ca_cert,
            "client.crt": client[0],
            "client.key": client[1],
            "serving.crt": serving[0],
            "serving.key": serving[1],
        }.items():
            (files / name).write_bytes(data)
            (files / name).chmod(0o600)
        return files

    def _kubelet_config(self, files: Path, resolv: Path) -> dict[str, Any]:
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": self.ip,
            "port": self.kubelet_port,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "tlsCertFile": str(files / "serving.crt"),
            "tlsPrivateKeyFile": str(files / "serving.key"),
            "authentication": {
                "x509": {"clientCAFile": str(files / "ca.crt")},
                "webhook": {"enabled": False},
                "anonymous": {"enabled": False},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "imageServiceEndpoint": f"unix://{self.containerd_socket}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroups.pods_root,
            "failCgroupV1": False,  # 1.37 refuses cgroup v1 unless told otherwise
            "failSwapOn": False,
            "podLogsDir": str(self.pod_logs_dir),
            "resolvConf": str(resolv),
            "clusterDNS": [CLUSTER_DNS],
            "clusterDomain": "cluster.local",
            # a test VM's disk and memory are what they are: never evict, never collect images
            "evictionHard": {
                "memory.available": "1Mi",
                "nodefs.available": "1Mi",
                "imagefs.available": "1Mi",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "nodeStatusUpdateFrequency": "2s",
            "nodeStatusReportFrequency": "5s",
            "syncFrequency": "10s",
            "volumePluginDir": str(self.kubelet_dir / "volume-plugins"),
            "rotateCertificates": False,
            "serverTLSBootstrap": False,
            "shutdownGracePeriod": "0s",
            "registerNode": True,
        }

    def _kubeconfig(self, files: Path) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "plane",
                    "cluster": {
                        "server": self.plane.server,
                        "certificate-authority": str(files / "ca.crt"),
                    },
                }
            ],
            "users": [
                {
                    "name": "node",
                    "user": {
                        "client-certificate": str(files / "client.crt"),
                        "client-key": str(files / "client.key"),
                    },
                }
            ],
            "contexts": [{"name": "node", "context": {"cluster": "plane", "user": "node"}}],
            "current-context": "node",
        }

    def _start_kubelet(self, timeout_s: float) -> None:
        kubelet = self.plane.bin_dir / "kubelet"
        if not kubelet.exists():
            raise RealNodeUnavailable(
                f"no kubelet in {self.plane.bin_dir}: run scripts/build-control-plane.sh"
            )
        config, kubeconfig = self._kubelet_files()
        process = self._spawn(
            "kubelet",
            [
                str(kubelet),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={self.kubelet_dir / 'root'}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.ip}",
                "--v=1",
            ],
        )
        with self.plane.http_client() as client:
            self._wait(process, lambda: self._ready(client), "Ready", timeout_s)

    def _ready(self, client: httpx.Client) -> bool:
        got = client.get(f"/api/v1/nodes/{self.name}")
        if got.status_code != 200:
            return False
        conditions = got.json().get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _advertise_fake_gpus(self) -> None:
        merge = {"Content-Type": "application/merge-patch+json"}
        resources = self.gpus.resources()
        with self.plane.http_client() as client:
            meta = client.patch(
                f"/api/v1/nodes/{self.name}",
                json={"metadata": self.gpus.metadata()},
                headers=merge,
            )
            status = client.patch(
                f"/api/v1/nodes/{self.name}/status",
                json={"status": {"capacity": resources, "allocatable": resources}},
                headers=merge,
            )
        for response in (meta, status):
            if response.status_code != 200:
                raise RealNodeUnavailable(
                    f"could not advertise the fake GPUs: {response.status_code} {response.text}"
                )

    def stop(self) -> None:
        """Stop everything this node started and leave the host as it was."""
        by_name = {p.name: p for p in self.processes}
        if "kubelet" in by_name:
            _terminate(by_name["kubelet"])
        if "containerd" in by_name and by_name["containerd"].popen.poll() is None:
            self._remove_containers()
        for process in reversed(self.processes):
            _terminate(process)
        self.processes.clear()
        if self._registry is not None:
            self._registry.close()
        self._clean_host()
        restore_sysctls_unless_in_use(self.cgroups)
        self.slot.release()

    def _remove_containers(self) -> None:
        tasks = self._ctr("tasks", "list", "--quiet").stdout.split()
        for task in tasks:
            self._ctr("tasks", "kill", "--signal=SIGKILL", task)
        for task in tasks:
            self._ctr("tasks", "delete", "--force", task)
        for container in self._ctr("containers", "list", "--quiet").stdout.split():
            self._ctr("containers", "delete", container)

    def _clean_host(self) -> None:
        """Remove what a node of this slot left: processes, pod networks, the bridge, mounts,
        log links and cgroups (also those of a test session that crashed)."""
        self.cgroups.kill_all()
        remove_pod_netns(self.slot.bridge)
        remove_bridge(self.slot.bridge)
        forget_cni_results(self.slot.bridge)
        left = self.slot.run_dir / "work"
        roots = [self.slot.run_dir, self.work]
        if left.exists():
            roots.append(Path(left.read_text()))
        for point in mounts_under(*roots):
            unmount(point)
        for link in Path("/var/log/containers").glob("*.log"):
            if link.is_symlink() and any(str(os.readlink(link)).startswith(str(r)) for r in roots):
                link.unlink()
        self.cgroups.remove()
        shutil.rmtree(self.slot.run_dir, ignore_errors=True)


_UNUSED_CONTAINERD_PLUGINS = [
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
]


def _socket_identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (stat.st_ino, stat.st_mtime_ns)


@contextlib.contextmanager
def device_plugin_folder(timeout_s: float = 600) -> Iterator[Path]:
    """Hold the kubelet's device plugin folder for one test module's plugin.

    Every kubelet on a machine uses ``/var/lib/kubelet/device-plugins`` (a path it hard-codes,
    with no flag) and empties it when it starts. A device plugin under test registers with
    whichever kubelet made ``kubelet.sock`` last; holding this lock while it runs keeps two
    such modules (two test sessions on one machine) from taking each other's kubelet. A real
    node started meanwhile by a module that needs no plugin still renews the folder: the
    plugin under test would then register again, with that node; the suite runs modules one
    after another, so that does not happen within one session."""
    SLOTS.mkdir(parents=True, exist_ok=True)
    with (SLOTS / "device-plugins.lock").open("w") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RealNodeUnavailable(
                        "another test session holds the kubelet's device plugin folder"
                    ) from None
                time.sleep(1)
        # start and end without the resources earlier plugins registered (KUBELET_CHECKPOINT)
        KUBELET_CHECKPOINT.unlink(missing_ok=True)
        try:
            yield DEVICE_PLUGIN_DIR
        finally:
            KUBELET_CHECKPOINT.unlink(missing_ok=True)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _terminate(process: Process) -> None:
    if process.popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.popen.pid, signal.SIGTERM)
    try:
        process.popen.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.popen.pid, signal.SIGKILL)
        process.popen.wait(timeout=10)


def _need(binary: str) -> str:
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise RealNodeUnavailable(f"no {binary} on this machine: apt-get install {PACKAGES}")
    return found


def _has_capability(bit: int) -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def _toml_bool(value: bool) -> str:
    return "true" if value else "false"


def _toml(text: str) -> str:
    return json.dumps(text)


def _sh(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def preflight() -> None:
    """What the node needs from the host, checked before anything starts."""
    if os.geteuid() != 0:
        raise RealNodeUnavailable("a real node needs root (cgroups, mounts, network namespaces)")
    for binary in ("containerd", "runc", "ctr", "docker-registry", "ip"):
        _need(binary)
    for plugin in ("bridge", "loopback"):
        if not (DEBIAN_CNI / plugin).exists():
            raise RealNodeUnavailable(
                f"no CNI plugin {DEBIAN_CNI / plugin}: apt-get install {PACKAGES}"
            )


def start_real_node(
    plane: ControlPlane,
    work: Path,
    *,
    name: str = "gaia-node-0",
    gpus: FakeGpus | None = None,
    advertise_gpus: bool = True,
    ip: str = "",
    timeout_s: float = 120,
) -> RealNode:
    """Join a real node (registry + containerd + kubelet) to ``plane`` and return it Ready,
    with FAKE GPUs advertised; ``RealNodeUnavailable`` (a ``ControlPlaneUnavailable``) says
    why it could not. The caller owns ``node.stop()``. A fixture::

        @pytest.fixture(scope="session")
        def real_node(control_plane, tmp_path_factory):
            try:
                node = start_real_node(control_plane, tmp_path_factory.mktemp("node"))
            except RealNodeUnavailable as exc:
                missing_component("A real Kubernetes node", str(exc))
            yield node
            node.stop()

    ``plane`` must be started; the node takes about 2 s to be Ready. Nodes of other control
    planes may run at the same time (up to 16 on a machine, one slot each); on one plane, give
    each node its own ``name``. Namespace deletion needs ``plane.ensure_controller_manager()``.

    Images: ``node.images.web_v1`` / ``web_v2`` / ``pause`` (``registry.gaia.test/gaia/...``),
    ``node.fresh_images(prefix)`` for never-pulled tags, ``node.web(version)`` for another
    version. ``node.ip`` is the node's InternalIP, pods get addresses of
    ``node.slot.subnet``, ``node.timings`` says how long each start step took (seconds since the
    start). Start-up failures stop whatever had started before raising.
    """
    preflight()
    slot = NodeSlot.take()
    try:
        cgroups = SlotCgroups.for_slot(slot)
    except BaseException:
        slot.release()
        raise
    node = RealNode(
        plane=plane,
        work=work,
        name=name,
        slot=slot,
        cgroups=cgroups,
        gpus=gpus or FakeGpus(),
        advertise_gpus=advertise_gpus,
        ip=ip,
    )
    try:
        return node.start(timeout_s=timeout_s)
    except BaseException:
        node.stop()
        raise
