"""containerd's registry host files for the agent: ``certs.d/<registry>/hosts.toml``.

For each registry of the agent's registries file, a file that puts the agent's mirror first and
the registry itself as the ``server`` (containerd's fallback when every host before it fails):

    server = "https://registry.example.com"

    [host."http://127.0.0.1:65001"]
      capabilities = ["pull", "resolve"]

``gaia p2p-agent --write-containerd-hosts /etc/containerd/certs.d`` writes them (the DaemonSet
runs it as an init container); containerd reads the folder on every pull, no restart needed,
provided its CRI ``registry.config_path`` names the folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from gaia.node.p2p.upstream import Registry


def hosts_toml(registry: Registry, mirror: str) -> str:
    """The hosts.toml of one registry (``mirror`` is the agent's host:port)."""
    return (
        f"# written by gaia p2p-agent: the node's agent first, the registry when it fails\n"
        f"server = {json.dumps(registry.url)}\n\n"
        f"[host.{json.dumps(f'http://{mirror}')}]\n"
        f'  capabilities = ["pull", "resolve"]\n'
    )


def write_containerd_hosts(
    folder: Path, registries: Mapping[str, Registry], mirror: str
) -> list[Path]:
    """Write ``<folder>/<host>/hosts.toml`` for every registry; returns the files written."""
    written = []
    for host, registry in sorted(registries.items()):
        if "/" in host or host in ("", ".", ".."):
            raise ValueError(f"not a registry host name: {host!r}")
        target = folder / host / "hosts.toml"
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(hosts_toml(registry, mirror))
        os.replace(tmp, target)
        written.append(target)
    return written
