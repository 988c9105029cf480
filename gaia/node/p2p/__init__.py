"""The P2P image agent (``gaia p2p-agent``, issue 17; docs/p2p.md).

One per node: an OCI distribution read API that containerd and podman use as a registry mirror,
a peer server that hands pieces of cached blobs to other nodes' agents, and a downloader that
asks the coordinator inside Gaia which piece to fetch from which node (or, once per piece for
the whole cluster, from the registry).
"""
