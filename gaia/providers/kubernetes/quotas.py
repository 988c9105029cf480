"""Quotas: a business's quota mirrored as the ResourceQuota of its namespace, and read back.

The business quota (``gaia.domain.resources``) is set on its namespace as a ResourceQuota on what
pods request (``quota_manifest``) and read back (``quota_from_k8s``); its ``hard`` keys are
``requests.<resource name>`` (``gaia.kube.resources``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from gaia.domain.resources import ResourceVector
from gaia.kube.labels import MANAGED_BY, MANAGED_BY_LABEL
from gaia.kube.quantities import parse_quantity
from gaia.kube.resources import GAIA_GPU_CORE, GAIA_GPU_MEMORY, NVIDIA_GPU, WHOLE_CARD

QUOTA_NAME = "gaia-business-quota"


def quota_manifest(namespace: str, hard: ResourceVector) -> dict[str, Any]:
    """The business quota as a ResourceQuota on what pods request. GPUs: whole cards are
    ``nvidia.com/gpu`` and shares ``gaia.io/gpu-core`` (hundredths), so the mirror allows
    ``floor(gpu / 100)`` cards and ``gpu`` hundredths of shares: a bound, not the exact sum
    the platform admits against (no pod asks for both)."""
    limits = {
        "requests.cpu": f"{hard.cpu}m",
        "requests.memory": f"{hard.memory}Mi",
        "requests.ephemeral-storage": f"{hard.local_disk}Gi",
        f"requests.{NVIDIA_GPU}": str(hard.gpu // WHOLE_CARD),
        f"requests.{GAIA_GPU_CORE}": str(hard.gpu),
        f"requests.{GAIA_GPU_MEMORY}": str(hard.gpu_memory),
    }
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {
            "name": QUOTA_NAME,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
        },
        "spec": {"hard": limits},
    }


def quota_from_k8s(doc: dict[str, Any]) -> ResourceVector:
    hard = (doc.get("spec") or {}).get("hard") or {}

    def amount(key: str, unit: Decimal) -> int:
        raw = hard.get(key)
        return int(parse_quantity(raw) / unit) if raw is not None else 0

    return ResourceVector(
        cpu=amount("requests.cpu", Decimal("0.001")),
        memory=amount("requests.memory", Decimal(2**20)),
        local_disk=amount("requests.ephemeral-storage", Decimal(2**30)),
        gpu=amount(f"requests.{GAIA_GPU_CORE}", Decimal(1)),
        gpu_memory=amount(f"requests.{GAIA_GPU_MEMORY}", Decimal(1)),
    )
