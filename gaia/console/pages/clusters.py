"""Console pages: clusters, the nodes of one cluster, and one node with its GPU topology.

Three pages, each a read of the platform API as the logged-in user (``ConsoleApi``), filtered
and paged here on the server:

- ``/console/clusters``: every cluster the user may see (``GET /clusters``, all cursor pages:
  clusters are tens, not thousands), filtered by name, region and health.
- ``/console/clusters/{cluster}``: the cluster's nodes (``GET /clusters/{c}/nodes``) with their
  allocation against capacity, filtered by name and status. Platform administrators act on
  nodes (cordon, uncordon, drain, remove) and, on a ``sim`` cluster, add one; nodes of a
  Kubernetes cluster join by kubelet registration, so there is no add form there. Each action
  is a plain POST answered with a redirect and the API's message (POST/redirect/GET); a 422 from
  the add form shows the page again with the messages next to the fields.
- ``/console/clusters/{cluster}/nodes/{node}``: one node (``GET /clusters/{c}/nodes/{n}``, which
  also lists the instances bound to it) and its GPUs drawn as the resource access cost tree the
  scheduler allocates on (``TopologyTree``: the same clustering of the same link matrix), as
  nested lists, so the structure reads as text too; each GPU says who holds it.

The API decides who sees what: a 404 or 403 from it becomes the same status here, with a short
page that says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response

from gaia.api.schemas.base import NAME_PATTERN
from gaia.console.listing import every_item, mentions, paginate
from gaia.console.web import (
    ApiResult,
    ConsoleApi,
    ConsoleUser,
    PageNumber,
    PageSize,
    User,
    plural_translator,
    redirect,
    refusal_page,
    render,
    translator,
)

# The one named exception to "the console only through the API" (pyproject.toml, the
# console-through-api contract): the scheduler's topology tree is pure code, and serving it
# through the API would add an API path.
from gaia.scheduler.links import topology_from_matrix
from gaia.scheduler.tree import TopologyTree, TreeNode

router = APIRouter(include_in_schema=False)
Text = Annotated[str, Query(max_length=100)]
# Names as the API spells them, so that a path never carries anything else into an API call.
ClusterName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=63)]
NodeName = Annotated[str, Path(max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]

HEALTHS = ("Healthy", "Unhealthy", "Unreachable", "Unknown")
NODE_STATUSES = ("ready", "not-ready", "schedulable", "cordoned")
NODE_ACTIONS = ("cordon", "uncordon", "drain", "remove")
# The add-node form: field name -> whether it is a whole number (the rest are text).
NODE_FIELDS = {
    "name": False,
    "cpu": True,
    "memory_mib": True,
    "local_disk_gib": True,
    "bandwidth_mbps": True,
    "gpus": True,
    "gpu_model": False,
    "gpu_memory_mib": True,
    "zone": False,
}


def _failed(request: Request, user: ConsoleUser, result: ApiResult) -> Response:
    return refusal_page(request, user, result, template="cluster_error.html", section="clusters")


# ---------------------------------------------------------------- the clusters list


@router.get("/console/clusters")
async def clusters_page(
    request: Request,
    user: User,
    page: PageNumber = 1,
    size: PageSize = 20,
    q: Text = "",
    region: Text = "",
    health: Text = "",
) -> Response:
    api = ConsoleApi(request, user)
    result = await every_item(api, "/api/v1/clusters")
    if not result.ok:
        return _failed(request, user, result)
    clusters: list[dict[str, Any]] = result.data
    regions = sorted({c["region"] for c in clusters if c["region"]})
    shown = [
        c
        for c in clusters
        if mentions(q, c["name"])
        and (not region or c["region"] == region)
        and (not health or c["health"] == health)
    ]
    paged = paginate(
        shown,
        page=page,
        size=size,
        query={"q": q, "region": region, "health": health, "size": size},
    )
    return render(
        request,
        user,
        "clusters.html",
        {
            "paged": paged,
            "regions": regions,
            "healths": HEALTHS,
            "q": q,
            "region": region,
            "health": health,
            "size": size,
            "total": len(clusters),
        },
        section="clusters",
    )


# ---------------------------------------------------------------- one cluster's nodes


def _node_matches(node: dict[str, Any], *, q: str, status: str) -> bool:
    if not mentions(q, node["name"]):
        return False
    ready, schedulable = bool(node["ready"]), bool(node["schedulable"])
    return {
        "ready": ready,
        "not-ready": not ready,
        "schedulable": schedulable,
        "cordoned": not schedulable,
    }.get(status, True)


async def _cluster_page(
    request: Request,
    user: ConsoleUser,
    cluster: str,
    *,
    page: int,
    size: int,
    q: str,
    status: str,
    form: dict[str, str] | None = None,
    form_errors: dict[str, str] | None = None,
    form_error: str = "",
) -> Response:
    api = ConsoleApi(request, user)
    got = await api.get(f"/api/v1/clusters/{cluster}")
    if not got.ok:
        return _failed(request, user, got)
    nodes = await every_item(api, f"/api/v1/clusters/{cluster}/nodes")
    rows: list[dict[str, Any]] = nodes.data if nodes.ok else []
    shown = [n for n in rows if _node_matches(n, q=q, status=status)]
    paged = paginate(shown, page=page, size=size, query={"q": q, "status": status, "size": size})
    info = got.data
    return render(
        request,
        user,
        "cluster.html",
        {
            "cluster": info,
            "paged": paged,
            "nodes_error": nodes.error,
            "q": q,
            "status": status,
            "statuses": NODE_STATUSES,
            "size": size,
            "total": len(rows),
            "ready": sum(1 for n in rows if n["ready"]),
            "can_act": user.is_admin,
            "can_add": user.is_admin and info["kind"] == "sim",
            "form": form or {},
            "form_errors": form_errors or {},
            "form_error": form_error,
            "here": str(request.url.path) + (f"?{request.url.query}" if request.url.query else ""),
        },
        section="clusters",
        status=422 if form_errors else 200,
    )


# ---------------------------------------------------------------- registration and removal
# (platform admins; the API refuses anyone else). A kubeconfig goes to the API and is never
# put back into a page, not even the form shown again with its errors.

SIM_FIELDS = ("nodes", "cpu", "memory_mib", "gpus", "gpu_model", "gpu_memory_mib", "local_disk_gib")
CLUSTER_FIELDS = ("name", "kind", "region", "zone", "description")


def _registration(
    request: Request,
    user: ConsoleUser,
    values: dict[str, str],
    errors: dict[str, str],
    *,
    status: int = 200,
) -> Response:
    if not user.is_admin:
        return _failed(request, user, ApiResult(403, {"message": "platform administrators only"}))
    context = {"values": values, "errors": errors, "sim_fields": SIM_FIELDS}
    return render(request, user, "cluster_new.html", context, section="clusters", status=status)


@router.get("/console/clusters/new")
async def cluster_new(request: Request, user: User) -> Response:
    defaults = {"kind": "sim", "nodes": "4", "cpu": "32", "memory_mib": "131072", "gpus": "8"}
    return _registration(request, user, defaults, {})


@router.post("/console/clusters/new", response_model=None)
async def cluster_register(request: Request, user: User) -> Response:
    form = await request.form()
    values = {k: str(form.get(k) or "").strip()[:1000] for k in CLUSTER_FIELDS + SIM_FIELDS}
    _ = translator(user.language)
    errors: dict[str, str] = {}
    body: dict[str, Any] = {k: values[k] for k in CLUSTER_FIELDS}
    if values["kind"] == "kubernetes":
        upload = form.get("kubeconfig_file")
        kubeconfig = str(form.get("kubeconfig") or "")
        if upload is not None and not isinstance(upload, str):
            content = await upload.read(1_000_001)
            if content:
                kubeconfig = content.decode("utf-8", errors="replace")
        if not kubeconfig.strip():
            errors["kubeconfig"] = _("Upload the kubeconfig file or paste it.")
        body["kubeconfig"] = kubeconfig
    elif values["kind"] == "sim":
        spec: dict[str, Any] = {}
        for k in SIM_FIELDS:
            if not values[k]:
                continue
            if k == "gpu_model":
                spec[k] = values[k]
            elif values[k].isdigit():
                spec[k] = int(values[k])
            else:
                errors[k] = _("A whole number.")
        body["sim"] = spec
    else:
        errors["kind"] = _("Choose sim or kubernetes.")
    if not errors:
        result = await ConsoleApi(request, user).post("/api/v1/clusters", body)
        if result.ok:
            return redirect(f"/console/clusters/{result.data['name']}", ok=_("Cluster registered."))
        if result.status == 403:
            return _failed(request, user, result)
        for path, message in result.field_errors.items():
            parts = path.split(".")
            key = parts[1] if parts[0] == "sim" and len(parts) > 1 else parts[0]
            errors.setdefault(key if key in values or key == "kubeconfig" else "form", message)
        errors = errors or {"form": result.error}
    return _registration(request, user, values, errors, status=422)


async def _holdings(api: ConsoleApi, cluster: str) -> dict[str, list[dict[str, Any]]]:
    """What the cluster still holds, as the API shows it: each business's apps on it (with
    their instances) and quotas on it."""
    apps: list[dict[str, Any]] = []
    quotas: list[dict[str, Any]] = []
    businesses = await every_item(api, "/api/v1/businesses")
    for b in businesses.data if businesses.ok else []:
        listed = await every_item(api, f"/api/v1/businesses/{b['name']}/apps")
        apps.extend(a for a in (listed.data if listed.ok else []) if a.get("cluster") == cluster)
        quota = await api.get(f"/api/v1/businesses/{b['name']}/quotas/{cluster}")
        if quota.ok:
            quotas.append({"business": b["name"], "hard": quota.data.get("hard", {})})
    return {"apps": apps, "quotas": quotas}


@router.get("/console/clusters/{cluster}/delete")
async def cluster_delete_confirm(request: Request, user: User, cluster: ClusterName) -> Response:
    api = ConsoleApi(request, user)
    found = await api.get(f"/api/v1/clusters/{cluster}")
    if not found.ok:
        return _failed(request, user, found)
    if not user.is_admin:
        return _failed(request, user, ApiResult(403, {"message": "platform administrators only"}))
    held = await _holdings(api, cluster)
    context = {"c": found.data, **held}
    return render(request, user, "cluster_delete.html", context, section="clusters")


@router.post("/console/clusters/{cluster}/delete", response_model=None)
async def cluster_delete(request: Request, user: User, cluster: ClusterName) -> Response:
    form = await request.form()
    force = form.get("force") == "true"
    _ = translator(user.language)
    result = await ConsoleApi(request, user).call(
        "DELETE", f"/api/v1/clusters/{cluster}", params={"force": "true" if force else ""}
    )
    if result.status in (403, 404):
        return _failed(request, user, result)
    if not result.ok:
        return redirect(f"/console/clusters/{cluster}/delete", error=result.error)
    return redirect("/console/clusters", ok=_("Cluster {name} removed.", name=cluster))


@router.get("/console/clusters/{cluster}")
async def cluster_page(
    request: Request,
    user: User,
    cluster: ClusterName,
    page: PageNumber = 1,
    size: PageSize = 50,
    q: Text = "",
    status: Text = "",
) -> Response:
    return await _cluster_page(request, user, cluster, page=page, size=size, q=q, status=status)


def _node_body(form: dict[str, str]) -> dict[str, Any]:
    """The form as the API's ``NodeIn``: numbers where they parse (the API's 422 says what is
    wrong with the rest), empty optional fields left out so the API's defaults apply."""
    body: dict[str, Any] = {}
    for key, numeric in NODE_FIELDS.items():
        value = form.get(key, "").strip()
        if not value and key != "name":
            continue
        body[key] = int(value) if numeric and value.lstrip("-").isdigit() else value
    links = [row.split() for row in form.get("gpu_links", "").splitlines() if row.strip()]
    if links:
        body["gpu_links"] = links
    labels = {}
    for pair in form.get("labels", "").replace(",", "\n").splitlines():
        if pair.strip():
            key, _, value = pair.partition("=")
            labels[key.strip()] = value.strip()
    if labels:
        body["labels"] = labels
    return body


@router.post("/console/clusters/{cluster}/nodes")
async def add_node(request: Request, user: User, cluster: ClusterName) -> Response:
    raw = await request.form()
    form = {k: str(v)[:4000] for k, v in raw.items() if isinstance(v, str)}
    result = await ConsoleApi(request, user).post(
        f"/api/v1/clusters/{cluster}/nodes", _node_body(form)
    )
    if result.ok:
        added = translator(user.language)("node {node} added", node=result.data["name"])
        return redirect(f"/console/clusters/{cluster}", ok=added)
    errors = result.field_errors
    if result.status == 422 or errors:
        return await _cluster_page(
            request,
            user,
            cluster,
            page=1,
            size=50,
            q="",
            status="",
            form=form,
            form_errors=errors or {"": result.error},
            form_error=result.error,
        )
    return redirect(f"/console/clusters/{cluster}#add-node", error=result.error)


def _back(cluster: str, raw_next: str) -> str:
    """Where an action returns to: the page it came from if it is this cluster's."""
    base = f"/console/clusters/{cluster}"
    if raw_next.startswith(base) and not raw_next.startswith("//"):
        # The flash of the previous action is not carried on to the next one.
        path, _, query = raw_next.partition("?")
        kept = "&".join(p for p in query.split("&") if not p.startswith(("ok=", "error=")))
        return path + ("?" + kept if kept else "")
    return base


@router.post("/console/clusters/{cluster}/nodes/{node}/{action}")
async def node_action(
    request: Request, user: User, cluster: ClusterName, node: NodeName, action: str
) -> Response:
    raw = await request.form()
    back = _back(cluster, str(raw.get("next") or ""))
    if action not in NODE_ACTIONS:
        return redirect(
            back, error=translator(user.language)("unknown action {action}", action=action)
        )
    api = ConsoleApi(request, user)
    path = f"/api/v1/clusters/{cluster}/nodes/{node}"
    if action == "remove":
        result = await api.delete(path)
        if result.ok and back.startswith(f"{path.replace('/api/v1', '/console')}"):
            back = f"/console/clusters/{cluster}"  # the node's own page is gone
    else:
        result = await api.post(f"{path}/{action}")
    if not result.ok:
        return redirect(back, error=result.error)
    _ = translator(user.language)
    if action == "drain":
        evicted = len(result.data.get("evicted", ())) if isinstance(result.data, dict) else 0
        message = plural_translator(user.language)(
            "node {node} drained: {count} instance evicted, its app recreates it on another node",
            "node {node} drained: {count} instances evicted, their apps recreate them on other "
            "nodes",
            evicted,
            node=node,
        )
    elif action == "cordon":
        message = _("node {node} cordoned: no new instances are placed on it", node=node)
    elif action == "uncordon":
        message = _("node {node} uncordoned: new instances may be placed on it", node=node)
    else:
        message = _("node {node} removed", node=node)
    return redirect(back, ok=message)


# ---------------------------------------------------------------- one node and its GPU tree


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds (part of) one GPU: an instance of a business the user sees, or someone else."""

    business: str | None
    app: str | None
    name: str | None
    share: float


@dataclass(frozen=True, slots=True)
class GpuView:
    index: int
    model: str
    memory_mib: int
    numa_node: int
    used: float
    holders: tuple[Holder, ...]


@dataclass(frozen=True, slots=True)
class TreeView:
    """One node of the drawn tree: an inner node (a link joining its children) or a GPU."""

    link: str
    gpus: tuple[int, ...]
    numa: int | None  # the NUMA node all GPUs below share, if they do
    children: tuple[TreeView, ...]
    gpu: GpuView | None


def gpu_views(node: dict[str, Any]) -> list[GpuView]:
    holders: dict[int, list[Holder]] = {}
    for inst in node.get("bound", []):
        for index in inst["gpu_ids"]:
            holders.setdefault(index, []).append(
                Holder(inst["business"], inst["app"], inst["name"], inst["gpu_share"])
            )
    return [
        GpuView(
            index=g["index"],
            model=g["model"],
            memory_mib=g["memory_mib"],
            numa_node=g["numa_node"],
            used=g["used"],
            holders=tuple(holders.get(g["index"], ())),
        )
        for g in node["gpus"]
    ]


def topology_view(node: dict[str, Any], gpus: list[GpuView]) -> TreeView | None:
    """The scheduler's tree for this node's link matrix (``TopologyTree``), for drawing."""
    count = len(gpus)
    if not count:
        return None
    links = node.get("gpu_links") or [
        ["X" if i == j else "SYS" for j in range(count)] for i in range(count)
    ]
    try:
        root = TopologyTree.build(
            topology_from_matrix(links), memory_mib=[g.memory_mib for g in gpus]
        ).root
    except ValueError:
        return None  # a matrix the scheduler cannot read: the page shows the matrix only
    by_index = {g.index: g for g in gpus}

    def view(tree: TreeNode) -> TreeView:
        numas = {by_index[i].numa_node for i in tree.gpus if i in by_index}
        return TreeView(
            link=tree.link,
            gpus=tree.gpus,
            numa=numas.pop() if len(numas) == 1 else None,
            children=tuple(view(c) for c in tree.children),
            gpu=by_index.get(tree.gpus[0]) if tree.is_leaf else None,
        )

    return view(root)


@router.get("/console/clusters/{cluster}/nodes/{node}")
async def node_page(request: Request, user: User, cluster: ClusterName, node: NodeName) -> Response:
    api = ConsoleApi(request, user)
    got = await api.get(f"/api/v1/clusters/{cluster}/nodes/{node}")
    if not got.ok:
        return _failed(request, user, got)
    info = await api.get(f"/api/v1/clusters/{cluster}")
    data = got.data
    gpus = gpu_views(data)
    return render(
        request,
        user,
        "node.html",
        {
            "cluster": info.data if info.ok else {"name": cluster, "kind": ""},
            "node": data,
            "gpus": gpus,
            "tree": topology_view(data, gpus),
            "can_act": user.is_admin,
            "here": str(request.url.path),
        },
        section="clusters",
    )


def _mb(count: int) -> str:
    return f"{count / 1e6:,.1f} MB"


@router.get("/console/clusters/{cluster}/images")
async def images_page(request: Request, user: User, cluster: ClusterName) -> Response:
    """P2P image distribution on the cluster: per image, the nodes holding it and the bytes
    that came from peers against those from the registry; the node agents behind it."""
    api = ConsoleApi(request, user)
    got = await api.get(f"/api/v1/clusters/{cluster}")
    if not got.ok:
        return _failed(request, user, got)
    images = await every_item(api, f"/api/v1/clusters/{cluster}/p2p/images")
    agents = await every_item(api, f"/api/v1/clusters/{cluster}/p2p/nodes")
    rows = []
    for image in images.data if images.ok else []:
        total = image["bytes_from_peers"] + image["bytes_from_registry"]
        rows.append(
            {
                **image,
                "from_peers": _mb(image["bytes_from_peers"]),
                "from_registry": _mb(image["bytes_from_registry"]),
                "peer_share": f"{100 * image['bytes_from_peers'] / total:.0f}%" if total else "-",
            }
        )
    nodes = [
        {**n, "up": _mb(n["bytes_up"]), "down": _mb(n["bytes_down"])}
        for n in (agents.data if agents.ok else [])
    ]
    return render(
        request,
        user,
        "cluster_images.html",
        {
            "cluster": got.data,
            "images": rows,
            # the API lists a user the images they may pull; an administrator, all of them
            "all_images": user.is_admin,
            "agents": nodes,
            "error": images.error or agents.error,
        },
        section="clusters",
    )
