"""The one error of the Kubernetes vocabulary: a document Gaia cannot read.

Everything in ``gaia.kube`` reads plain JSON documents (objects as the API server returns them,
quantities, annotation values) and raises ``UnreadableObject`` when one does not say what it
must. The message names the field and what is wrong (``spec.containers[0].resources.requests[cpu]:
'lots' is not a quantity ...``), so each caller can pass it on as its own error: the ``kubernetes``
provider as ``InvalidRequest``, the scheduler extender in the ``Error`` field of its answer (its
``BadExtenderRequest`` is this class: a request is bad exactly when a document in it is).
"""

from __future__ import annotations


class UnreadableObject(ValueError):
    """A Kubernetes document, or a value in one, that cannot be read; the message says where
    and why."""
