"""What Gaia runs on a worker node, beside the kubelet.

``topology`` reads this machine's GPU topology (``nvidia-smi topo -m`` or NVML) into the
scheduler's ``GpuTopology``, the matrix a Node's ``gaia.io/gpu-topology`` annotation carries
(``gaia.kube.nodes``).

``ipam`` is a CNI IPAM plugin (the ``gaia-ipam`` executable) that gives a pod the same IP across
restarts: the seed of Galaxy-style floating IPs. It is invoked by the CNI main plugin (``bridge``)
that the container runtime runs, one short process per call, and keeps its leases in files.

``cni`` is the Galaxy network's CNI main plugin (the ``gaia-cni`` executable, issue 19,
docs/network.md): floating IPs from Gaia's pools (kept across nodes), NAT with host ports, and
host networking, delegating the plumbing to the upstream plugins and asking Gaia over HTTP.
"""
