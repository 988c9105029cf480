"""Services: the v1 Service that selects an app's instances, and a Service with its endpoints as
the port's ``Service``, as pure functions.

A service selects ``gaia.io/app``; a port without a name is named ``p<port>`` (which reads back
as no name). A service without ports is headless (``clusterIP: None``, which Kubernetes requires
for a port-less service); ``clusterIP`` cannot change in place, so ``service_needs_replace``
tells the provider when to delete and create instead of updating. Endpoints come from the
service's ``discovery.k8s.io/v1`` EndpointSlices (``kubernetes.io/service-name``); an endpoint
whose ``ready`` condition is absent is ready, as the API defines. The domain rides in the
``gaia.io/domain`` annotation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gaia.domain.errors import InvalidRequest
from gaia.kube.labels import (
    APP_LABEL,
    DOMAIN_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    SERVICE_NAME_LABEL,
)
from gaia.providers.kubernetes.fields import (
    as_int,
    as_items,
    as_object,
    as_str_map,
    as_text,
    check_dns_label,
    check_label_value,
    check_port,
    check_port_name,
)
from gaia.providers.port import Endpoint, PortSpec, Service, ServiceSpec


def _default_port_name(port: int) -> str:
    return f"p{port}"


def service_manifest(spec: ServiceSpec) -> dict[str, Any]:
    """A v1 Service selecting the app's instances (headless when it has no ports)."""
    check_dns_label(spec.namespace, "namespace")
    check_dns_label(spec.name, "service name")
    if not spec.app:
        raise InvalidRequest(f"service {spec.namespace}/{spec.name} needs the app it selects")
    check_label_value(spec.app, f"service {spec.namespace}/{spec.name}: app")
    what = f"service {spec.namespace}/{spec.name}"
    ports: list[dict[str, Any]] = []
    names: set[str] = set()
    seen: set[tuple[int, str]] = set()
    for port in spec.ports:
        check_port(port, what)
        if (port.port, port.protocol) in seen:
            raise InvalidRequest(f"{what} lists port {port.port}/{port.protocol} twice")
        seen.add((port.port, port.protocol))
        name = port.name or _default_port_name(port.port)
        if not port.name and name in names:
            name = f"{name}-{port.protocol.lower()}"
        check_port_name(name, what, limit=63)
        if name in names:
            raise InvalidRequest(f"{what} names two ports {name!r}")
        names.add(name)
        ports.append(
            {"name": name, "port": port.port, "targetPort": port.port, "protocol": port.protocol}
        )
    metadata: dict[str, Any] = {
        "name": spec.name,
        "namespace": spec.namespace,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY, APP_LABEL: spec.app},
    }
    if spec.domain:
        metadata["annotations"] = {DOMAIN_ANNOTATION: spec.domain}
    body: dict[str, Any] = {"type": "ClusterIP", "selector": {APP_LABEL: spec.app}}
    if ports:
        body["ports"] = ports
    else:
        body["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata, "spec": body}


def service_needs_replace(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """True when ``desired`` cannot be applied over ``current`` (switching between headless and
    a cluster IP): delete the service and create it again."""
    now = as_object(current.get("spec"), "Service.spec").get("clusterIP")
    wanted = as_object(desired.get("spec"), "Service.spec").get("clusterIP")
    return (now == "None") != (wanted == "None")


def _endpoint_key(endpoint: Endpoint) -> tuple[str, int, str, str]:
    head, _, tail = endpoint.instance.rpartition("-")
    if head and tail.isascii() and tail.isdigit():
        return head, int(tail), endpoint.instance, endpoint.ip
    return endpoint.instance, -1, endpoint.instance, endpoint.ip


def service_from_k8s(
    service: Mapping[str, Any], endpoint_slices: Iterable[Mapping[str, Any]]
) -> Service:
    """A v1 Service and its endpoints; slices of other services are skipped."""
    meta = as_object(service.get("metadata"), "Service.metadata")
    name = as_text(meta.get("name"), "Service.metadata.name")
    namespace = as_text(meta.get("namespace"), "Service.metadata.namespace")
    where = f"service {namespace}/{name}"
    spec = as_object(service.get("spec"), f"{where}: spec")
    labels = as_str_map(meta.get("labels"), f"{where}: metadata.labels")
    annotations = as_str_map(meta.get("annotations"), f"{where}: metadata.annotations")
    selector = as_str_map(spec.get("selector"), f"{where}: spec.selector")
    ports = []
    for doc in as_items(spec.get("ports"), f"{where}: spec.ports"):
        port = as_int(doc.get("port"), f"{where}: port")
        protocol = as_text(doc.get("protocol"), f"{where}: protocol") or "TCP"
        port_name = as_text(doc.get("name"), f"{where}: port name")
        default = _default_port_name(port)
        if port_name in (default, f"{default}-{protocol.lower()}"):
            port_name = ""
        ports.append(PortSpec(port=port, name=port_name, protocol=protocol))
    cluster_ip = as_text(spec.get("clusterIP"), f"{where}: spec.clusterIP")
    endpoints: dict[tuple[str, str], Endpoint] = {}
    for eps in endpoint_slices:
        eps_meta = as_object(eps.get("metadata"), "EndpointSlice.metadata")
        eps_labels = as_str_map(eps_meta.get("labels"), "EndpointSlice.metadata.labels")
        if eps_labels.get(SERVICE_NAME_LABEL) != name:
            continue
        if eps_meta.get("namespace") not in (None, "", namespace):
            continue
        for ep in as_items(eps.get("endpoints"), f"{where}: EndpointSlice.endpoints"):
            addresses = ep.get("addresses")
            if not isinstance(addresses, list) or not addresses:
                continue
            ip = as_text(addresses[0], f"{where}: endpoint address")
            ref = as_object(ep.get("targetRef"), f"{where}: endpoint targetRef")
            instance = as_text(ref.get("name"), f"{where}: targetRef.name")
            conditions = as_object(ep.get("conditions"), f"{where}: endpoint conditions")
            ready = conditions.get("ready")  # nil means ready (discovery.k8s.io/v1)
            endpoints[(instance, ip)] = Endpoint(
                instance=instance,
                ip=ip,
                node=as_text(ep.get("nodeName"), f"{where}: endpoint nodeName"),
                ready=ready is None or ready is True,
            )
    return Service(
        namespace=namespace,
        name=name,
        app=selector.get(APP_LABEL) or labels.get(APP_LABEL, ""),
        cluster_ip="" if cluster_ip == "None" else cluster_ip,
        ports=tuple(ports),
        domain=annotations.get(DOMAIN_ANNOTATION, ""),
        endpoints=tuple(sorted(endpoints.values(), key=_endpoint_key)),
    )
