"""Images for the simulated cluster: a layer catalog, a layer cache per node, and pull time.

**Catalog.** Every image reference gets a deterministic list of layers, so a simulated cluster
behaves the same on every run without a registry. ``repo:tag`` (also ``registry/repo:tag`` and
``repo@sha256:...``) is split into repository and tag; a hash of the repository chooses 3-8
layers, of which the bottom ones (20-300 MB each: OS, runtime, dependencies) depend on the
repository only and the top 1-2 (10-120 MB: the application) also on the tag. Two tags of one
repository therefore share everything but their top layers, which is what makes an in-place
upgrade from ``v7`` to ``v8`` fetch a fraction of the image. A layer's digest chains its parent's
digest, as OCI chain ids do: two images share a layer only if they share everything below it.
Tests replace the made-up sizes with ``register(ref, sizes)``; registered images follow the same
chaining, so two tags registered with the same first sizes share those layers.

**Per-node cache and downloads.** ``NodeImages`` holds the layers a node has (its content store)
and the layers it is downloading. Downloads share the node's bandwidth fairly *per layer* (each
active layer download is a connection and gets ``bandwidth / active`` bytes per second; TCP
shares a link per connection too). Sharing is work-conserving, so a lone pull of ``B`` missing
bytes takes exactly ``B / bandwidth``, however its layers are sized. A second pull that needs a
layer already downloading on the node waits for that download instead of starting another one.
When every layer a pull needs is in the cache, it unpacks ``UNPACK_S_PER_LAYER`` seconds per layer
it had to fetch. A lone pull therefore takes::

    missing_bytes / (bandwidth_mbps * 125_000) + UNPACK_S_PER_LAYER * missing_layers

A *pre-pull* (``SimCluster.prewarm_image``) is a pull with no instance behind it: it shares
downloads the same way, and ``cancel`` calls it off (layers only it waited for stop downloading).
The cache is unbounded: the sim models no disk for images and no image garbage collection, so a
pre-pull never evicts anything; it fetches only the layers the node lacks.

Nothing here knows the clock: the cluster calls ``advance_to(t)`` at the time ``next_completion``
said, in time order, and gets back the pulls whose layers are all present.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gaia.domain.errors import InvalidRequest

UNPACK_S_PER_LAYER = 0.1
MAX_LAYERS = 128
MAX_LAYER_BYTES = 100 * 10**9
_MB = 10**6
# a download whose remaining bytes fell below this has finished (float rounding of shares)
_DONE_EPSILON_BYTES = 0.5


@dataclass(frozen=True, slots=True)
class Layer:
    digest: str
    size: int


def split_ref(ref: str) -> tuple[str, str]:
    """``registry:5000/team/app:v8`` -> (``registry:5000/team/app``, ``v8``); a digest is a tag."""
    name, at, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    repo, tag = (name[:colon], name[colon + 1 :]) if colon > slash else (name, "latest")
    if at:
        tag = "@" + digest
    return repo, tag


def _hash(*parts: object) -> bytes:
    return hashlib.blake2b("|".join(str(p) for p in parts).encode(), digest_size=32).digest()


def _chain(parent: str, key: str) -> str:
    return sys.intern("sha256:" + hashlib.sha256(f"{parent}|{key}".encode()).hexdigest())


class LayerCatalog:
    def __init__(self) -> None:
        self._by_ref: dict[str, tuple[Layer, ...]] = {}

    def register(self, ref: str, layer_sizes_bytes: Sequence[int]) -> tuple[Layer, ...]:
        if not isinstance(ref, str) or not ref.strip():
            raise InvalidRequest("image reference must be a non-empty string")
        if not 1 <= len(layer_sizes_bytes) <= MAX_LAYERS:
            raise InvalidRequest(f"an image has 1 to {MAX_LAYERS} layers")
        for size in layer_sizes_bytes:
            if not isinstance(size, int) or isinstance(size, bool):
                raise InvalidRequest("layer sizes are integers (bytes)")
            if not 0 < size <= MAX_LAYER_BYTES:
                raise InvalidRequest(f"a layer is 1 byte to {MAX_LAYER_BYTES} bytes")
        repo, _ = split_ref(ref)
        layers: list[Layer] = []
        parent = ""
        for i, size in enumerate(layer_sizes_bytes):
            parent = _chain(parent, f"{repo}|{i}|{size}")
            layers.append(Layer(parent, size))
        self._by_ref[ref] = tuple(layers)
        return self._by_ref[ref]

    def layers(self, ref: str) -> tuple[Layer, ...]:
        known = self._by_ref.get(ref)
        if known is None:
            known = self._by_ref[ref] = self._derive(ref)
        return known

    @staticmethod
    def _derive(ref: str) -> tuple[Layer, ...]:
        repo, tag = split_ref(ref)
        shape = _hash("shape", repo)
        count = 3 + shape[0] % 6
        top = 1 + shape[1] % 2
        layers: list[Layer] = []
        parent = ""
        for i in range(count):
            if i < count - top:
                size = 20 * _MB + int.from_bytes(_hash("base", repo, i)[:4], "big") % (280 * _MB)
                key = f"{repo}|{i}|{size}"
            else:
                size = 10 * _MB + int.from_bytes(_hash("top", repo, tag, i)[:4], "big") % (
                    110 * _MB
                )
                key = f"{repo}|{tag}|{i}|{size}"
            parent = _chain(parent, key)
            layers.append(Layer(parent, size))
        return tuple(layers)


@dataclass(slots=True, eq=False)
class Pull:
    """One image pull on one node: the layers it had to fetch and those it still waits for."""

    image: str
    fetch: tuple[Layer, ...]
    started: float
    on_layers_ready: Callable[[float], None]
    waiting: set[str] = field(default_factory=set)

    @property
    def total_bytes(self) -> int:
        return sum(layer.size for layer in self.fetch)

    @property
    def unpack_s(self) -> float:
        return UNPACK_S_PER_LAYER * len(self.fetch)


class NodeImages:
    """A node's layer cache and its in-flight layer downloads (see the module docstring)."""

    __slots__ = ("_active", "_last_t", "_waiters", "cached", "rate", "timer_token")

    def __init__(self, *, bandwidth_mbps: int) -> None:
        self.rate = float(bandwidth_mbps) * 125_000.0  # bytes per second
        self.cached: set[str] = set()
        self._active: dict[str, float] = {}  # digest -> bytes still to download
        self._waiters: dict[str, list[Pull]] = {}
        self._last_t = 0.0
        self.timer_token = 0  # the cluster's guard against stale completion timers

    def missing(self, layers: Sequence[Layer]) -> tuple[Layer, ...]:
        return tuple(layer for layer in layers if layer.digest not in self.cached)

    def begin(self, t: float, pull: Pull) -> None:
        """Wait for each layer of ``pull.fetch``, downloading those nobody is fetching yet."""
        self._progress(t)
        for layer in pull.fetch:
            pull.waiting.add(layer.digest)
            self._waiters.setdefault(layer.digest, []).append(pull)
            if layer.digest not in self._active:
                self._active[layer.digest] = float(layer.size)

    def next_completion(self) -> float | None:
        if not self._active:
            return None
        left = min(self._active.values())
        return self._last_t + max(0.0, left) * len(self._active) / self.rate

    def advance_to(self, t: float) -> list[Pull]:
        """Account the downloads up to ``t``; the pulls whose last layer arrived by then."""
        self._progress(t)
        done = [d for d, left in self._active.items() if left <= _DONE_EPSILON_BYTES]
        ready: list[Pull] = []
        for digest in done:
            del self._active[digest]
            self.cached.add(digest)
            for pull in self._waiters.pop(digest, []):
                pull.waiting.discard(digest)
                if not pull.waiting:
                    ready.append(pull)
        return ready

    def done_bytes(self, pull: Pull, t: float) -> int:
        n = len(self._active)
        share = self.rate * max(0.0, t - self._last_t) / n if n else 0.0
        done = 0
        for layer in pull.fetch:
            if layer.digest not in pull.waiting:
                done += layer.size
            elif layer.digest in self._active:
                left = max(0.0, self._active[layer.digest] - share)
                done += round(layer.size - left)
        return done

    def cancel(self, t: float, pull: Pull) -> None:
        """Stop waiting for ``pull``'s layers (a pre-pull the platform called off): a layer
        nobody else waits for stops downloading and its partial bytes are dropped; a layer an
        instance's own pull also waits for goes on for that pull."""
        self._progress(t)
        for digest in pull.waiting:
            waiters = self._waiters.get(digest)
            if waiters is None:
                continue
            if pull in waiters:
                waiters.remove(pull)
            if not waiters:
                del self._waiters[digest]
                self._active.pop(digest, None)
        pull.waiting.clear()

    def in_flight(self, pull: Pull) -> bool:
        """Is ``pull`` still waiting here for a layer being downloaded? (False after ``lose``.)"""
        return any(pull in self._waiters.get(digest, ()) for digest in pull.waiting)

    def lose(self) -> None:
        """The node went away: partial downloads are lost, the cache (on disk) stays."""
        self._active.clear()
        self._waiters.clear()

    def _progress(self, t: float) -> None:
        if self._active and t > self._last_t:
            share = self.rate * (t - self._last_t) / len(self._active)
            for digest in self._active:
                self._active[digest] -= share
        self._last_t = max(self._last_t, t)
