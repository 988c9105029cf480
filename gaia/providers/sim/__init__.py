"""The ``sim`` provider: an in-process simulated cluster, the embedded default and the playground.

``SimCluster`` implements ``gaia.providers.port.ClusterProvider`` over virtual nodes (CPU,
memory, disk, bandwidth, GPUs with a real-looking link topology) and adds what only a
simulation can do: a steppable clock (``advance()``), fault injection (``crash``, ``oom_kill``,
``fail_liveness``, ``fail_image_pulls``, ``lose_node``, ``set_load``, ... and ``inject(dict)``)
and an image catalog tests can pin (``register_image``). ``validate_sim_spec`` checks the
cluster's ``sim_spec`` document.

The private modules, each explained at its top:

- ``_cluster``: the provider: state, the timed transitions, the instance lifecycle, faults;
- ``_records``: the internal node and instance records and their port views;
- ``_spec``: the ``sim_spec`` document (GPU link matrices, their presets and their one set of
  rules, are the domain's: ``gaia.domain.gpu_links``);
- ``_images``: layer catalog, per-node layer cache, pull time and bandwidth sharing;
- ``_network``: host, pod and service addresses; ``_events``: the bounded event ring;
- ``_workload``: metrics and log lines from workload profiles; ``_exec``: a tiny shell;
- ``_control_plane``: simulated API server and etcd figures.
"""

from gaia.providers.sim._cluster import SimCluster
from gaia.providers.sim._spec import DEFAULT_SPEC, MAX_SIM_NODES, validate_sim_spec

__all__ = ["DEFAULT_SPEC", "MAX_SIM_NODES", "SimCluster", "validate_sim_spec"]
