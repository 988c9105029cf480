"""Every metric the platform collects: name, type, unit, labels, where it comes from, and why.

This tuple is the one list. The collector (``gaia.monitor.metrics.collector``) writes only names
listed here, alert policies are checked against it, and ``docs/metrics.md`` is generated from it
(``python -m gaia.monitor.metrics.catalogue --markdown > docs/metrics.md``; a test keeps the two
equal).

Names follow Prometheus' conventions: ``gaia_`` prefix, base units (bytes, seconds), ``_total``
for counters, ``_percent`` for 0..100 ratios (what people type as alert thresholds). Labels are
bounded by what the platform manages (clusters, nodes, businesses, apps, instances), never pod
IPs or uids.

Where a figure comes from (``source``):

- ``provider``: the cluster's provider port (``list_nodes``, ``list_instances``, ``metrics``);
- ``control-plane``: the provider's ``control_plane_metrics`` (API server and etcd);
- ``database``: the platform's own database (quotas, apps' desired instances, cluster health);
- ``collector``: the collector's own bookkeeping about a cluster;
- ``platform``: the platform process itself (``gaia.monitor.metrics.platform``);
- ``registry``: the image registry (the platform's /metrics, from the registry's events, its
  log of failed requests, the token endpoint's refusals and Gaia's records).

``adapters`` says which provider kinds yield a provider or control-plane figure: the kubelet's
resource endpoint that the ``kubernetes`` adapter reads gives CPU and memory only, so network,
disk and GPU usage are ``sim``-only until the adapter reads cAdvisor and DCGM too.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

GAUGE = "gauge"
COUNTER = "counter"
HISTOGRAM = "histogram"  # only the platform's own (Prometheus client) metrics
TYPES = (GAUGE, COUNTER, HISTOGRAM)
SOURCES = ("provider", "control-plane", "database", "collector", "platform", "registry")
ADAPTERS = ("sim", "kubernetes")
SIM_ONLY = ("sim",)

# (area, title, what the talk calls it)
AREAS: tuple[tuple[str, str, str], ...] = (
    ("cluster", "Clusters", "cluster resources"),
    ("business", "Businesses and quotas", "cluster resources"),
    ("app", "Apps", "cluster resources"),
    ("instance", "Instances", "cluster resources"),
    ("node", "Hosts (nodes)", "hosts"),
    ("gpu", "GPUs", "hosts"),
    ("storage", "Storage", "storage"),
    ("control-plane", "Control plane and etcd", "etcd"),
    ("registry", "Image registry", "image registry"),
    ("platform", "The platform itself", "(platform reliability)"),
)
AREA_NAMES = tuple(a[0] for a in AREAS)


@dataclass(frozen=True, slots=True)
class MetricDef:
    name: str
    type: str  # GAUGE | COUNTER | HISTOGRAM
    unit: str
    labels: tuple[str, ...]
    source: str
    area: str
    help: str
    # provider kinds that yield it (provider and control-plane sources); () for the others
    adapters: tuple[str, ...] = ()
    planned: bool = False  # listed for completeness; nothing collects it yet

    @property
    def kubernetes_only(self) -> bool:
        return self.adapters == ("kubernetes",)


# label sets
C = ("cluster",)
N = ("cluster", "node", "zone")
A = ("cluster", "business", "app")
INST = ("cluster", "business", "app", "instance", "node", "version")
Q = ("business", "cluster", "resource")
BC = ("business", "cluster")
PHASE = ("cluster", "phase")
CARD = ("cluster", "node", "gpu", "model")
DISK = ("cluster", "business", "disk")
REG = ("registry",)
REG_B = ("registry", "business")
HTTP = ("method", "route")
HTTP_STATUS = ("method", "route", "status")
NOTIFY = ("channel", "result")
G, K, H = GAUGE, COUNTER, HISTOGRAM


def provider(
    name: str,
    type: str,
    unit: str,
    labels: tuple[str, ...],
    area: str,
    help: str,
    adapters: tuple[str, ...] = ADAPTERS,
) -> MetricDef:
    """A figure read through the provider port."""
    return MetricDef(name, type, unit, labels, "provider", area, help, adapters)


def control_plane(name: str, type: str, unit: str, labels: tuple[str, ...], help: str) -> MetricDef:
    """A figure of the provider's ``control_plane_metrics`` (its labels plus ``cluster``)."""
    return MetricDef(
        name, type, unit, ("cluster", *labels), "control-plane", "control-plane", help, ADAPTERS
    )


def other(
    name: str,
    type: str,
    unit: str,
    labels: tuple[str, ...],
    source: str,
    area: str,
    help: str,
    *,
    planned: bool = False,
) -> MetricDef:
    """A figure from elsewhere than a cluster (the database, the platform, the registry)."""
    return MetricDef(name, type, unit, labels, source, area, help, (), planned)


# fmt: off
METRICS: tuple[MetricDef, ...] = (
    # ---- Clusters
    other("gaia_cluster_up", G, "boolean", C, "database", "cluster",
        "1 when the cluster's last health probe found it Healthy (the cluster health loop's "
        "verdict on the cluster row), else 0."),
    other("gaia_cluster_collect_success", G, "boolean", C, "collector", "cluster",
        "1 when the collector could read the cluster's nodes and instances in its last pass."),
    other("gaia_cluster_collect_seconds", G, "seconds", C, "collector", "cluster",
        "How long reading the cluster took in the collector's last pass (nodes, instances, "
        "usage, control plane)."),
    provider("gaia_cluster_nodes", G, "count", C, "cluster",
        "Nodes registered in the cluster."),
    provider("gaia_cluster_nodes_ready", G, "count", C, "cluster",
        "Nodes that are Ready."),
    provider("gaia_cluster_nodes_schedulable", G, "count", C, "cluster",
        "Nodes that are Ready and not cordoned: where new instances can go."),
    provider("gaia_cluster_cpu_capacity_millicores", G, "millicores", C, "cluster",
        "CPU capacity of all nodes."),
    provider("gaia_cluster_memory_capacity_bytes", G, "bytes", C, "cluster",
        "Memory capacity of all nodes."),
    provider("gaia_cluster_cpu_usage_percent", G, "percent", C, "cluster",
        "CPU in use over the capacity of the nodes that report usage."),
    provider("gaia_cluster_memory_usage_percent", G, "percent", C, "cluster",
        "Memory in use (working set) over the capacity of the nodes that report usage."),
    provider("gaia_cluster_cpu_allocated_percent", G, "percent", C, "cluster",
        "CPU requested by the instances bound to nodes, over the capacity of all nodes."),
    provider("gaia_cluster_memory_allocated_percent", G, "percent", C, "cluster",
        "Memory requested by the instances bound to nodes, over the capacity of all nodes."),
    provider("gaia_cluster_instances", G, "count", PHASE, "cluster",
        "The platform's instances in the cluster per phase (Scheduled, Pulling, Created, "
        "Running, Failed, Terminating; every phase is written, zeros included)."),
    other("gaia_cluster_apps", G, "count", C, "database", "cluster",
        "Apps deployed to the cluster."),
    # ---- Businesses and quotas
    other("gaia_business_quota_hard", G, "resource unit", Q, "database", "business",
        "The business's hard quota in the cluster, per dimension, in API units (cpu: cores, "
        "memory and gpu_memory: MiB, disks: GiB, bandwidth: Mbit/s, gpu: cards). Dimensions with "
        "neither a limit nor use are left out."),
    other("gaia_business_quota_used", G, "resource unit", Q, "database", "business",
        "What the business has reserved or uses against that quota, in the same units."),
    other("gaia_business_quota_used_percent", G, "percent", Q, "database", "business",
        "Used over hard, per dimension (dimensions without a limit are left out)."),
    other("gaia_business_apps", G, "count", BC, "database", "business",
        "Apps the business runs in the cluster."),
    provider("gaia_business_instances", G, "count", BC, "business",
        "Instances of the business (its namespace) in the cluster, in any phase."),
    provider("gaia_business_cpu_usage_millicores", G, "millicores", BC, "business",
        "CPU its running instances use."),
    provider("gaia_business_memory_usage_bytes", G, "bytes", BC, "business",
        "Memory (working set) its running instances use."),
    # ---- Apps
    other("gaia_app_instances_desired", G, "count", A, "database", "app",
        "Instances the app should run (its instance map; 0 while the app is stopped)."),
    provider("gaia_app_instances_running", G, "count", A, "app",
        "Instances in phase Running."),
    provider("gaia_app_instances_ready", G, "count", A, "app",
        "Instances that are ready (serving)."),
    provider("gaia_app_instances_failed", G, "count", A, "app",
        "Instances in phase Failed (the platform restarts or moves them)."),
    provider("gaia_app_instances_pending", G, "count", A, "app",
        "Instances being started (Scheduled, Pulling, Created)."),
    provider("gaia_app_available_percent", G, "percent", A, "app",
        "Ready instances over desired ones (apps with none desired are left out)."),
    provider("gaia_app_cpu_usage_percent", G, "percent", A, "app",
        "Mean over the app's running instances of their CPU use over their CPU request."),
    provider("gaia_app_memory_usage_percent", G, "percent", A, "app",
        "Mean over the app's running instances of their memory use over their memory request."),
    provider("gaia_app_cpu_usage_millicores", G, "millicores", A, "app",
        "CPU all its running instances use."),
    provider("gaia_app_memory_usage_bytes", G, "bytes", A, "app",
        "Memory (working set) all its running instances use."),
    provider("gaia_app_network_receive_bytes_per_second", G, "bytes/s", A, "app",
        "Bytes its running instances receive per second.", SIM_ONLY),
    provider("gaia_app_network_transmit_bytes_per_second", G, "bytes/s", A, "app",
        "Bytes its running instances send per second.", SIM_ONLY),
    # ---- Instances
    provider("gaia_instance_cpu_usage_millicores", G, "millicores", INST, "instance",
        "CPU the running instance uses."),
    provider("gaia_instance_cpu_usage_percent", G, "percent", INST, "instance",
        "CPU use over the instance's CPU request (over a nominal 100 millicores when it requests "
        "none)."),
    provider("gaia_instance_memory_usage_bytes", G, "bytes", INST, "instance",
        "Memory (working set) the running instance uses."),
    provider("gaia_instance_memory_usage_percent", G, "percent", INST, "instance",
        "Memory use over the instance's memory request (over a nominal 256 MiB when it requests "
        "none)."),
    provider("gaia_instance_network_receive_bytes_per_second", G, "bytes/s", INST, "instance",
        "Bytes received per second, from the provider's counter between two "
        "collections.", SIM_ONLY),
    provider("gaia_instance_network_transmit_bytes_per_second", G, "bytes/s", INST, "instance",
        "Bytes sent per second, from the provider's counter between two collections.", SIM_ONLY),
    provider("gaia_instance_ready", G, "boolean", INST, "instance",
        "1 when the instance is ready (serving), else 0; every instance, in any phase."),
    provider("gaia_instance_running", G, "boolean", INST, "instance",
        "1 when the instance's container is running (phase Running), else 0."),
    provider("gaia_instance_restarts_total", K, "count", INST, "instance",
        "Times the instance's container was started again (local restarts and in-place "
        "upgrades), over the instance's life."),
    # ---- Hosts (nodes)
    provider("gaia_node_ready", G, "boolean", N, "node",
        "1 when the node is Ready, else 0."),
    provider("gaia_node_schedulable", G, "boolean", N, "node",
        "1 when the node takes new instances (not cordoned or draining), else 0."),
    provider("gaia_node_instances", G, "count", N, "node",
        "Instances bound to the node (any owner)."),
    provider("gaia_node_cpu_capacity_millicores", G, "millicores", N, "node",
        "The node's CPU."),
    provider("gaia_node_memory_capacity_bytes", G, "bytes", N, "node",
        "The node's memory."),
    provider("gaia_node_cpu_usage_millicores", G, "millicores", N, "node",
        "CPU in use on the node (everything on it, system included)."),
    provider("gaia_node_cpu_usage_percent", G, "percent", N, "node",
        "CPU in use over the node's capacity."),
    provider("gaia_node_memory_usage_bytes", G, "bytes", N, "node",
        "Memory in use (working set) on the node."),
    provider("gaia_node_memory_usage_percent", G, "percent", N, "node",
        "Memory in use over the node's capacity."),
    provider("gaia_node_cpu_allocated_percent", G, "percent", N, "node",
        "CPU requested by the instances bound to the node, over its capacity."),
    provider("gaia_node_memory_allocated_percent", G, "percent", N, "node",
        "Memory requested by the instances bound to the node, over its capacity."),
    provider("gaia_node_bandwidth_allocated_percent", G, "percent", N, "node",
        "Egress bandwidth requested by its instances over the node's bandwidth (nodes without a "
        "bandwidth figure are left out)."),
    provider("gaia_node_network_receive_bytes_per_second", G, "bytes/s", N, "node",
        "Bytes the node receives per second.", SIM_ONLY),
    provider("gaia_node_network_transmit_bytes_per_second", G, "bytes/s", N, "node",
        "Bytes the node sends per second.", SIM_ONLY),
    # ---- GPUs
    provider("gaia_node_gpus_total", G, "cards", N, "gpu",
        "GPU cards in the node (nodes with GPUs)."),
    provider("gaia_node_gpus_allocated", G, "cards", N, "gpu",
        "GPU cards held by instances, fractional shares added up (0.5 + 0.25 = 0.75)."),
    provider("gaia_node_gpu_memory_total_bytes", G, "bytes", N, "gpu",
        "Memory of all the node's GPU cards."),
    provider("gaia_node_gpu_memory_allocated_bytes", G, "bytes", N, "gpu",
        "GPU memory held by instances (a whole card holds all of its memory)."),
    provider("gaia_node_gpu_utilization_percent", G, "percent", N, "gpu",
        "Mean utilisation of the node's cards.", SIM_ONLY),
    provider("gaia_node_gpu_memory_usage_bytes", G, "bytes", N, "gpu",
        "GPU memory in use on the node's cards.", SIM_ONLY),
    provider("gaia_gpu_allocated_percent", G, "percent", CARD, "gpu",
        "How much of one card is held (100: a whole card or shares adding up to one); shows "
        "fragmentation."),
    provider("gaia_cluster_gpus_total", G, "cards", C, "gpu",
        "GPU cards in the cluster."),
    provider("gaia_cluster_gpus_allocated", G, "cards", C, "gpu",
        "GPU cards held by instances in the cluster (fractions added up)."),
    provider("gaia_cluster_gpu_allocated_percent", G, "percent", C, "gpu",
        "GPU cards held over the cards the cluster has (clusters with GPUs)."),
    provider("gaia_cluster_gpu_utilization_percent", G, "percent", C, "gpu",
        "Mean utilisation of all the cluster's cards.", SIM_ONLY),
    provider("gaia_instance_gpus_allocated", G, "cards", INST, "gpu",
        "GPU cards (or the share of one) the instance holds (instances with GPUs)."),
    provider("gaia_instance_gpu_utilization_percent", G, "percent", INST, "gpu",
        "Utilisation of the cards or the share the instance holds (instances with "
        "GPUs).", SIM_ONLY),
    provider("gaia_instance_gpu_memory_usage_bytes", G, "bytes", INST, "gpu",
        "GPU memory the instance uses (instances with GPUs).", SIM_ONLY),
    # ---- Storage
    provider("gaia_node_disk_capacity_bytes", G, "bytes", N, "storage",
        "The node's local disk for instances."),
    provider("gaia_node_disk_allocated_percent", G, "percent", N, "storage",
        "Local disk requested by the instances bound to the node, over its capacity."),
    provider("gaia_node_disk_usage_bytes", G, "bytes", N, "storage",
        "Local disk in use on the node (images, logs, instances' writable layers).", SIM_ONLY),
    provider("gaia_node_disk_usage_percent", G, "percent", N, "storage",
        "Local disk in use over the node's capacity.", SIM_ONLY),
    provider("gaia_instance_disk_usage_bytes", G, "bytes", INST, "storage",
        "Local disk the running instance has written.", SIM_ONLY),
    provider("gaia_cluster_disk_capacity_bytes", G, "bytes", C, "storage",
        "Local disk of all nodes."),
    provider("gaia_cluster_disk_usage_percent", G, "percent", C, "storage",
        "Local disk in use over the capacity of the nodes that report usage.", SIM_ONLY),
    other("gaia_cloud_disk_capacity_bytes", G, "bytes", DISK, "database", "storage",
        "Size of a cloud disk (normal or shared) of a business.", planned=True),
    other("gaia_cloud_disk_usage_bytes", G, "bytes", DISK, "provider", "storage",
        "Bytes written on a cloud disk.", planned=True),
    other("gaia_cloud_disk_attached", G, "boolean", DISK, "provider", "storage",
        "1 when the cloud disk is attached to an instance.", planned=True),
    # ---- Control plane and etcd
    control_plane("gaia_etcd_up", G, "boolean", (),
        "1 when the API server reports its etcd ready (``/readyz/etcd``), else 0."),
    control_plane("gaia_etcd_objects", G, "count", ("resource",),
        "Objects stored in etcd per resource (``pods``, ``leases.coordination.k8s.io``, ...)."),
    control_plane("gaia_etcd_db_size_bytes", G, "bytes", (),
        "Size of the etcd database file (it grows until compacted and defragmented; etcd's "
        "default quota is 2 GiB)."),
    control_plane("gaia_etcd_request_latency_seconds", G, "seconds", (),
        "Mean latency of the API server's requests to etcd since the previous collection."),
    control_plane("gaia_etcd_requests_total", K, "count", (),
        "Requests the API server made to etcd since it started."),
    control_plane("gaia_etcd_request_errors_total", K, "count", (),
        "Requests to etcd that failed, since the API server started."),
    control_plane("gaia_apiserver_requests_total", K, "count", (),
        "Requests the API server answered since it started."),
    control_plane("gaia_apiserver_errors_total", K, "count", (),
        "Requests the API server answered with a 5xx code since it started."),
    control_plane("gaia_apiserver_request_latency_seconds", G, "seconds", (),
        "Mean latency of the API server's requests (watches left out) since the previous "
        "collection."),
    control_plane("gaia_apiserver_inflight_requests", G, "count", ("kind",),
        "Requests being served, per kind (``readOnly``, ``mutating``)."),
    control_plane("gaia_apiserver_watches", G, "count", (),
        "Open watches on the API server."),
    control_plane("gaia_apiserver_memory_bytes", G, "bytes", (),
        "Resident memory of the API server process."),
    control_plane("gaia_apiserver_cpu_usage_millicores", G, "millicores", (),
        "CPU the API server process used since the previous collection."),
    # ---- Image registry (platform's /metrics: gaia.monitor.metrics.platform.RegistryCollector;
    # ``business`` is the namespace: a business, ``public`` or ``u/<user>``)
    other("gaia_registry_up", G, "boolean", REG, "registry", "registry",
        "1 while the registry Gaia runs (GAIA_REGISTRY_LISTEN) is running."),
    other("gaia_registry_repositories", G, "count", REG_B, "registry", "registry",
        "Repositories per namespace."),
    other("gaia_registry_images", G, "count", REG_B, "registry", "registry",
        "Image tags per namespace."),
    other("gaia_registry_storage_bytes", G, "bytes", REG, "registry", "registry",
        "Bytes the registry's images take (distinct blobs per namespace, by Gaia's records)."),
    other("gaia_registry_pulls_total", K, "count", REG_B, "registry", "registry",
        "Images pulled (manifests served), since the platform process started."),
    other("gaia_registry_pull_errors_total", K, "count", REG_B, "registry", "registry",
        "Image pulls that failed since the platform process started: refused by Gaia's token "
        "endpoint, or answered with an error by the registry (read from its log)."),
    other("gaia_registry_pushes_total", K, "count", REG_B, "registry", "registry",
        "Images pushed (manifests pushed by tag), since the platform process started."),
    # ---- P2P image distribution (the coordinator's figures, gaia.controllers.swarm)
    other("gaia_p2p_pieces_total", K, "count", ("cluster", "source"), "platform", "registry",
        "Pieces nodes fetched and reported, per source (``peer``, ``registry``)."),
    other("gaia_p2p_bytes_total", K, "bytes", ("cluster", "source"), "platform", "registry",
        "Bytes nodes fetched, per source (``peer``, ``registry``)."),
    other("gaia_p2p_registry_assignments_total", K, "count", C, "platform", "registry",
        "Pieces the coordinator assigned to the registry (back-to-source fetches)."),
    other("gaia_p2p_registry_refetches_total", K, "count", C, "platform", "registry",
        "Registry assignments of a piece already assigned to the registry once (the first "
        "fetch failed or expired); 0 while every piece is fetched from the registry once."),
    other("gaia_p2p_registry_fetches_per_piece", G, "ratio", C, "platform", "registry",
        "Registry assignments per piece ever assigned to the registry: 1 is exactly once."),
    other("gaia_p2p_corrupt_pieces_total", K, "count", C, "platform", "registry",
        "Pieces a node reported corrupt (its hash did not match) from a peer."),
    other("gaia_p2p_hash_conflicts_total", K, "count", C, "platform", "registry",
        "Registry reports of a piece's hash refused because a different hash came first."),
    other("gaia_p2p_swarms", G, "count", C, "platform", "registry",
        "Blobs with an active swarm (details in memory)."),
    other("gaia_p2p_agents", G, "count", C, "platform", "registry",
        "P2P agents registered with the coordinator (heartbeat not lapsed)."),
    # ---- The access layer (gaia.controllers.access: HAProxy and dnsmasq for apps' domains)
    other("gaia_access_up", G, "boolean", (), "platform", "platform",
        "1 while the HAProxy and the dnsmasq Gaia runs (GAIA_ACCESS_LISTEN) are both running."),
    other("gaia_access_backends", G, "count", (), "platform", "platform",
        "Apps served by their domain (a domain and a TCP port)."),
    other("gaia_access_servers", G, "count", ("state",), "platform", "platform",
        "Instances behind the load balancer, per state (``ready``, ``drain``, ``maint``)."),
    other("gaia_access_reloads_total", K, "count", (), "platform", "platform",
        "HAProxy reloads (apps, domains or instance addresses changed) since the process "
        "started."),
    other("gaia_access_drains_total", K, "count", (), "platform", "platform",
        "Instances drained before the app controller stopped them, since the process started."),
    # ---- HA: leader leases (gaia.controllers.leadership)
    other("gaia_leader", G, "boolean", ("group", "replica"), "platform", "platform",
        "1 when this replica leads the loop group (``controllers``, ``monitoring``), else 0."),
    other("gaia_leader_epoch", G, "count", ("group", "replica"), "platform", "platform",
        "The epoch of the group's lease this replica holds; it grows at every change of leader."),
    # ---- Backups (gaia.controllers.backups, docs/backup.md); read from the database at each
    # scrape, so every replica reports the same figures
    other("gaia_backup_last_success_timestamp_seconds", G, "seconds", (), "platform", "platform",
        "When the newest succeeded backup finished (Unix time); alert when it is too old."),
    other("gaia_backup_last_duration_seconds", G, "seconds", (), "platform", "platform",
        "How long the newest succeeded backup took."),
    other("gaia_backup_last_size_bytes", G, "bytes", (), "platform", "platform",
        "The size of the newest succeeded backup's archive."),
    other("gaia_backups", G, "count", ("state",), "platform", "platform",
        "Backups listed, per state (``Pending``, ``Running``, ``Succeeded``, ``Failed``)."),
    # ---- The platform itself
    other("gaia_http_requests_total", K, "count", HTTP_STATUS, "platform", "platform",
        "API requests the platform answered, per route template (never the raw path) and status "
        "code."),
    other("gaia_http_request_duration_seconds", H, "seconds", HTTP, "platform", "platform",
        "How long the platform took to answer API requests, per route template."),
    other("gaia_loop_passes_total", K, "count", ("loop",), "platform", "platform",
        "Passes each background loop (cluster health, apps, collector, alerts...) ran."),
    other("gaia_app_controller_quiet_ticks_total", K, "count", (), "platform", "platform",
        "Ticks of the app controller that found the platform quiet (nothing changed since a "
        "pass that left every app as wished) and made no full pass."),
    other("gaia_app_controller_partial_passes_total", K, "count", (), "platform", "platform",
        "Passes of the app controller over only the apps its work queue held due (an app not "
        "yet as wished, looked at again after a delay that doubles up to the resync)."),
    other("gaia_app_controller_queued", G, "count", (), "platform", "platform",
        "Apps and clusters in the app controller's work queue: not yet as wished, to be looked "
        "at again before anything is heard of them."),
    other("gaia_loop_failures_total", K, "count", ("loop",), "platform", "platform",
        "Passes that failed with an error."),
    other("gaia_loop_last_pass_duration_seconds", G, "seconds", ("loop",), "platform", "platform",
        "How long each loop's last pass took."),
    other("gaia_alert_notifications_total", K, "count", NOTIFY, "platform", "platform",
        "Alert notifications sent, per channel (email, sms, wecom, webhook) and result."),
    other("gaia_alert_evaluation_seconds", H, "seconds", (), "platform", "platform",
        "How long an evaluation pass over every enabled alert policy takes."),
    other("gaia_alerts_firing", G, "count", (), "platform", "platform",
        "Alerts firing now."),
    other("gaia_tsdb_series", G, "count", (), "platform", "platform",
        "Series held by the embedded time-series store."),
    other("gaia_tsdb_points", G, "count", (), "platform", "platform",
        "Points held by the embedded time-series store."),
    other("gaia_tsdb_dropped_samples_total", K, "count", ("reason",), "platform", "platform",
        "Samples the embedded store did not keep, per reason (max_series, out_of_order, "
        "too_old)."),
    other("gaia_tsdb_snapshot_bytes", G, "bytes", (), "platform", "platform",
        "Size of the embedded store's last snapshot on disk."),
    other("gaia_tsdb_snapshot_seconds", G, "seconds", (), "platform", "platform",
        "How long the embedded store's last snapshot took."),
    other("gaia_build_info", G, "info", ("version",), "platform", "platform",
        "Always 1; the version label says which Gaia runs."),
)
# fmt: on

_BY_NAME = {m.name: m for m in METRICS}


def lookup(name: str) -> MetricDef | None:
    """The catalogue's entry for ``name``, None when the platform does not collect it."""
    return _BY_NAME.get(name)


def collected() -> tuple[MetricDef, ...]:
    """Entries something writes today (the planned ones left out)."""
    return tuple(m for m in METRICS if not m.planned)


# ---------------------------------------------------------------- docs/metrics.md

_INTRO = """\
# Metrics

Every metric Gaia collects, generated from `gaia/monitor/metrics/catalogue.py` by
`python -m gaia.monitor.metrics.catalogue --markdown > docs/metrics.md` (a test checks that this
file matches the catalogue). {collected} metrics are collected today; {planned} more are planned.

**Where they are kept.** The collector (`gaia/monitor/metrics/collector.py`) reads every registered
cluster every `metrics_interval_seconds` (15 s by default), concurrently with a timeout per
cluster, and writes the samples to the platform's metric store: the embedded time-series store
by default (in the platform process, no extra component), or a real Prometheus when one is
configured (`GAIA_METRICS_STORE=prometheus`: Prometheus scrapes the collected series from
`GET /metrics/clusters`). Both answer the same questions (latest value, range), so alert
policies and the console work the same on either. The platform's own metrics (the last
section) are served at `GET /metrics` in the Prometheus text format, with the Prometheus
client's `process_*` and `python_*` figures. Names and labels follow Prometheus' conventions:
base units, `_total` counters, `_percent` ratios from 0 to 100.

**Where they come from** (the *source* column): `provider` is the cluster's provider port
(nodes, instances, usage); `control-plane` its API server and etcd figures; `database` the
platform's own database (quotas, desired instances, cluster health); `collector` the
collector's own bookkeeping; `platform` the platform process itself; `registry` the image
registry. The *adapters* column says which cluster kinds yield a figure: the `kubernetes`
adapter reads the kubelet's resource endpoint, which gives CPU and memory only, so network,
disk and GPU usage come from `sim` clusters only for now. On `sim` clusters the control-plane
figures are simulated from the cluster's object counts, not measured.

**The talk's areas.** The talk collects 87 metrics over cluster resources, hosts, the image
registry, storage and etcd. Here: *cluster resources* are the Clusters, Businesses and quotas,
Apps and Instances sections; *hosts* are Hosts (nodes) and GPUs; *storage* is Storage (local
disks now, cloud disks planned); *etcd* is Control plane and etcd; the *image registry*
section is the platform registry's (issue 18). The platform's own health comes last.

Label meanings: `cluster` the registered cluster's name; `business` the business (its
namespace in each cluster); `app`, `instance` (`<app>-<id>`), `version` (the app template the
instance runs); `node`, `zone`; `resource` a quota dimension (`cpu`, `memory`, `local_disk`,
`cloud_disk`, `shared_disk`, `bandwidth`, `gpu`, `gpu_memory`) or, for etcd, a Kubernetes
resource.
"""


def markdown() -> str:
    lines = [
        _INTRO.format(collected=len(collected()), planned=len(METRICS) - len(collected())).rstrip(
            "\n"
        )
    ]
    for area, title, talk in AREAS:
        entries = [m for m in METRICS if m.area == area]
        if not entries:
            continue
        lines += ["", f"## {title}", "", f"The talk's *{talk}*.", ""]
        lines.append("| name | type | unit | labels | source | adapters | help |")
        lines.append("|---|---|---|---|---|---|---|")
        for m in entries:
            labels = ", ".join(f"`{label}`" for label in m.labels) or "-"
            adapters = ", ".join(m.adapters) or "-"
            source = f"{m.source} (planned)" if m.planned else m.source
            text = m.help.replace("|", "\\|")
            lines.append(
                f"| `{m.name}` | {m.type} | {m.unit} | {labels} | {source} | {adapters} | {text} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gaia.monitor.metrics.catalogue",
        description="The catalogue of Gaia's metrics.",
    )
    parser.add_argument("--markdown", action="store_true", help="print docs/metrics.md")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown())
    else:
        for m in METRICS:
            flag = " (planned)" if m.planned else ""
            sys.stdout.write(f"{m.name}{{{','.join(m.labels)}}} {m.type} {m.unit}{flag}\n")
    return 0


__all__ = ["AREAS", "METRICS", "MetricDef", "collected", "lookup", "markdown"]

if __name__ == "__main__":
    raise SystemExit(main())
