"""Names a business may not take, because a business is a Kubernetes namespace.

The ``kubernetes`` provider runs a business's objects in the namespace named after it, with
server-side apply. A business named ``default`` (or ``kube-system``) would therefore put its
objects among the cluster's own and could overwrite them (``default/kubernetes`` is the API
server's Service). So the names Kubernetes keeps for itself (``default``, every ``kube-*``:
``kube-system``, ``kube-public``, ``kube-node-lease``) and Gaia's own namespaces are reserved:
``check_business_name`` refuses them when a business is created. The provider also refuses to
touch any object it did not create (``gaia.providers.kubernetes``), which covers namespaces
reserved later or made by hand.
"""

from __future__ import annotations

from gaia.domain.errors import InvalidRequest

# Namespaces a Gaia installation may run in (its deployment and the scheduler extender).
GAIA_NAMESPACES = frozenset({"gaia", "gaia-system"})
KUBERNETES_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
# Kubernetes reserves the prefix for system namespaces; new ones keep appearing.
KUBERNETES_PREFIX = "kube-"


def reserved_reason(name: str) -> str | None:
    """Why ``name`` cannot be a business (a namespace Gaia must not write into); ``None`` if
    it can."""
    if name in KUBERNETES_NAMESPACES or name.startswith(KUBERNETES_PREFIX):
        return f"'{name}' is a Kubernetes system namespace ('default' and every 'kube-*')"
    if name in GAIA_NAMESPACES:
        return f"'{name}' is the namespace Gaia itself runs in"
    return None


def check_business_name(name: str) -> None:
    """``InvalidRequest`` (422) if ``name`` is reserved: a business is a namespace."""
    reason = reserved_reason(name)
    if reason is not None:
        raise InvalidRequest(
            f"name: {reason}, reserved because a business becomes a namespace of that name in "
            "Kubernetes clusters; choose another name",
            details={"field": "name", "reserved": name},
        )
