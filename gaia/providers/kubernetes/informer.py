"""Informer-style caches (list, then watch from the list's resourceVersion) and the event loop
that keeps them.

**Why a loop of its own.** The platform calls a provider from several event loops: uvicorn's,
the background controllers', and a test's ``asyncio.run`` per controller pass. An HTTP client's
connections and a watch are bound to the loop that made them, so each registered cluster gets
one thread running one event loop (``ClusterLoop``) that owns its client, its watches and its
caches; the provider's async methods hand their coroutine to that loop and await the answer
from whatever loop they are called on.

**An informer** lists a resource, keeps the objects as plain JSON dicts keyed by (namespace, name),
and watches from the list's ``resourceVersion``. A watch that the API server ends (at its request
timeout) is resumed from the last version seen, by lightkube; ``410 Gone`` (the version is no longer
held: compacted in etcd, or out of the API server's watch cache) means events were missed, so the
informer lists again and replaces its store; every ``resync_s`` it also lists again, which repairs
anything a bug or a lost event might have left (a watch whose connection stalled without an error,
for one). Other errors (the API server restarting, the network) back off from 0.2 s up to 10 s, then
list and watch again, for ever; ``healthy`` says whether the last attempt worked. Each change bumps
``revision`` and wakes ``changed`` waiters.

**What is kept** (``transform``, as client-go's ``SetTransform``): each object passes the
informer's transform once, on receipt (a list, a watch event, a ``remember``), before it is stored;
the provider's strip what it never reads (``managedFields`` above all: on a pod that KWOK or a
kubelet updates, the field managers' entries are a third of the object), so a large cluster costs
less memory. A transform must keep ``metadata.name``, ``namespace`` and ``resourceVersion``.

**Indexes** (``indexes``, as client-go's ``Indexers``): named functions from an object to a key
(a pod's node, a pod's app) that the informer keeps a reverse map of (``indexed(name, key)``), so
a question about one node or one app does not walk every pod of the cluster.

**What is derived** (``Derived``): readers turn cached objects into the port's values (an
``Instance`` from a pod, a ``Node`` from a node and its pods) on every controller pass; at 5,000
pods that conversion was most of a pass (bench/kube_scale.py). A ``Derived`` keeps each value
with the dicts it came from and converts again only when one of them is another dict. That test
is complete because the informer never edits a stored dict: every change (a watch event, a
relist, a ``remember``) stores a new one.

**What a list reports.** ``on_change`` hears what the list changed, not the whole store again:
``ADDED`` for a new object, ``MODIFIED`` for one at another version, ``DELETED`` (with the last
version known) for one gone; a consumer that records each change (the cluster's event log) would
otherwise record every object once per relist. An object the caller ``remember``-ed while a list
was on its way back is newer than the list and stays (the watch from the list's version brings
its later changes), or a pod just created would vanish from the cache until its watch event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

import httpx
import httpx2  # lightkube's HTTP client: its errors are not httpx's
from lightkube import ApiError, AsyncClient
from lightkube.core.resource import NamespacedResource

log = logging.getLogger(__name__)
T = TypeVar("T")
V = TypeVar("V")
Key = tuple[str, str]  # (namespace or "", name)


class ClusterLoop:
    """One thread, one event loop: where a cluster's client, watches and caches live."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"gaia-kube-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the cluster's loop and await its result from the caller's loop."""
        return await asyncio.wrap_future(self.submit(coro))

    def run_sync(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self.submit(coro).result(timeout)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._loop.call_soon_threadsafe(self._loop.create_task, coro)

    def stop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._loop.is_closed():
            return
        with contextlib.suppress(Exception):
            self.run_sync(cancel_all(), timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()


def _raw_version(doc: dict[str, Any]) -> str:
    return str((doc.get("metadata") or {}).get("resourceVersion") or "")


def _number(version: str) -> int:
    return int(version) if version.isdigit() else -1


def _version(doc: dict[str, Any]) -> int:
    return _number(_raw_version(doc))


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


class Informer:
    """List+watch one resource into ``items`` (see the module docstring). Runs on a cluster's
    loop: ``start`` there, read ``items`` there (the provider's coroutines run on that loop)."""

    def __init__(
        self,
        client: AsyncClient,
        resource: Any,
        *,
        labels: dict[str, Any] | None = None,
        resync_s: float = 300.0,
        on_change: Callable[[str, dict[str, Any]], Awaitable[None] | None] | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        indexes: Mapping[str, Callable[[dict[str, Any]], str | None]] | None = None,
    ) -> None:
        self.client = client
        self.resource = resource
        self.labels = labels
        self.resync_s = resync_s
        self.on_change = on_change
        self.transform = transform
        self.indexes = dict(indexes or {})
        # read-only outside this class: the writes go through _put / _drop, which keep the
        # indexes: index name -> value -> the objects with that value
        self.items: dict[Key, dict[str, Any]] = {}
        self._indexed: dict[str, dict[str, dict[Key, dict[str, Any]]]] = self._no_index()
        self.resource_version = ""
        self.synced = asyncio.Event()
        self.healthy = False
        self.last_error = ""
        self.revision = 0
        self.relists = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    @property
    def _namespace(self) -> str | None:
        """Every namespace for namespaced kinds; cluster-scoped kinds take none."""
        return "*" if issubclass(self.resource, NamespacedResource) else None

    @property
    def kind(self) -> str:
        return str(getattr(self.resource, "__name__", self.resource))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def remember(self, doc: dict[str, Any]) -> None:
        """Put an object the caller just wrote into the store, unless the watch has already
        delivered a newer version of it (then that one stays). Resource versions are compared
        as numbers, which every etcd-backed API server gives."""
        key = key_of(doc)
        known = self.items.get(key)
        if known is not None and _version(known) >= _version(doc):
            return
        self._put(key, self._received(doc))

    def forget(self, namespace: str, name: str) -> None:
        self._drop((namespace, name))

    def _no_index(self) -> dict[str, dict[str, dict[Key, dict[str, Any]]]]:
        return {name: {} for name in self.indexes}

    def indexed(self, index: str, value: str) -> list[dict[str, Any]]:
        """The stored objects whose ``index`` (one of ``indexes``) is ``value``."""
        return list(self._indexed[index].get(value, {}).values())

    def _received(self, doc: dict[str, Any]) -> dict[str, Any]:
        return doc if self.transform is None else self.transform(doc)

    def _put(self, key: Key, doc: dict[str, Any]) -> None:
        self._drop(key)
        self.items[key] = doc
        for name, index in self.indexes.items():
            value = index(doc)
            if value:
                self._indexed[name].setdefault(value, {})[key] = doc

    def _drop(self, key: Key) -> None:
        doc = self.items.pop(key, None)
        if doc is None:
            return
        for name, index in self.indexes.items():
            value = index(doc)
            buckets = self._indexed[name]
            bucket = buckets.get(value) if value else None
            if value and bucket is not None:
                bucket.pop(key, None)
                if not bucket:
                    del buckets[value]

    async def wait_synced(self, timeout: float) -> None:
        await asyncio.wait_for(self.synced.wait(), timeout)

    async def wait_change(self, since: int, timeout: float) -> int:
        """Wait until ``revision`` passes ``since`` (or the timeout); returns the revision."""
        async with self._changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.revision > since), timeout
                )
            return self.revision

    async def run(self) -> None:
        delay = 0.2
        while True:
            try:
                await self._list()
                self.healthy, self.last_error, delay = True, "", 0.2
                deadline = time.monotonic() + self.resync_s
                while time.monotonic() < deadline:
                    try:
                        async with asyncio.timeout(deadline - time.monotonic()):
                            await self._watch()
                    except TimeoutError:
                        break  # time to resync
            except ApiError as exc:
                if exc.status.code == 410:
                    log.info("%s watch expired (410 Gone): listing again", self.kind)
                    continue
                self._failed(f"API error {exc.status.code}: {exc.status.message}")
            except (httpx2.HTTPError, httpx.HTTPError, OSError) as exc:
                self._failed(f"{type(exc).__name__}: {exc}")
            except Exception as exc:  # a bug must not end the watch silently: log, retry
                log.exception("%s informer failed", self.kind)
                self._failed(f"{type(exc).__name__}: {exc}")
            else:
                continue
            await asyncio.sleep(delay)
            delay = min(10.0, delay * 2)

    def _failed(self, message: str) -> None:
        if self.healthy or message != self.last_error:
            log.warning("%s informer: %s (retrying)", self.kind, message)
        self.healthy, self.last_error = False, message

    async def _list(self) -> None:
        listing = self.client.list(self.resource, namespace=self._namespace, labels=self.labels)
        fresh: dict[Key, dict[str, Any]] = {}
        async for obj in listing:
            doc = self._received(obj.to_dict())
            fresh[key_of(doc)] = doc
        listed = _number(listing.resourceVersion)
        if listed >= 0:
            # remembered while the list was on its way back: newer than anything listed
            fresh.update((k, doc) for k, doc in self.items.items() if _version(doc) > listed)
        known = self.items
        self.items, self._indexed = {}, self._no_index()
        for k, doc in fresh.items():
            self._put(k, doc)
        self.resource_version = listing.resourceVersion
        self.relists += 1
        self.synced.set()
        await self._bump()
        if self.on_change is not None:
            for k, doc in fresh.items():
                before = known.get(k)
                if before is None:
                    await self._notify("ADDED", doc)
                elif _raw_version(before) != _raw_version(doc):
                    await self._notify("MODIFIED", doc)
            for k, doc in known.items():
                if k not in fresh:
                    await self._notify("DELETED", doc)

    async def _watch(self) -> None:
        async for op, obj in self.client.watch(
            self.resource,
            namespace=self._namespace,
            labels=self.labels,
            resource_version=self.resource_version,
        ):
            doc = self._received(obj.to_dict())
            k = key_of(doc)
            if op == "DELETED":
                self._drop(k)
            elif op in ("ADDED", "MODIFIED"):
                self._put(k, doc)
            version = (doc.get("metadata") or {}).get("resourceVersion")
            if version:
                self.resource_version = str(version)
            await self._bump()
            await self._notify(op, doc)

    async def _notify(self, op: str, doc: dict[str, Any]) -> None:
        if self.on_change is None:
            return
        result = self.on_change(op, doc)
        if result is not None:
            await result

    async def _bump(self) -> None:
        async with self._changed:
            self.revision += 1
            self._changed.notify_all()


class Derived(Generic[V]):
    """Values made from an informer's stored dicts, made again only when one of those dicts has
    been replaced (see the module docstring). Used on the cluster's loop, like the informer."""

    def __init__(self) -> None:
        # key -> (the dicts the value was made from, the value); holding the dicts keeps their
        # ids from being reused while the entry lives
        self._known: dict[Key, tuple[tuple[dict[str, Any], ...], V]] = {}

    def get(self, key: Key, sources: tuple[dict[str, Any], ...], make: Callable[[], V]) -> V:
        known = self._known.get(key)
        if (
            known is not None
            and len(known[0]) == len(sources)
            and all(a is b for a, b in zip(known[0], sources, strict=True))
        ):
            return known[1]
        value = make()
        self._known[key] = (sources, value)
        return value

    def keep_only(self, keys: Collection[Key]) -> None:
        """Drop the values of every key not in ``keys`` (objects gone from the cache)."""
        for key in [k for k in self._known if k not in keys]:
            del self._known[key]

    def __len__(self) -> int:
        return len(self._known)


__all__ = ["ClusterLoop", "Derived", "Informer", "key_of"]
