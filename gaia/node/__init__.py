"""What Gaia runs on a worker node, beside the kubelet.

``ipam`` is a CNI IPAM plugin (the ``gaia-ipam`` executable) that gives a pod the same IP across
restarts: the seed of Galaxy-style floating IPs. It is invoked by the CNI main plugin (``bridge``)
that the container runtime runs, one short process per call, and keeps its leases in files.
"""
