"""Sidecar injection for Kubernetes: the admission webhook and ``coordd inject``.

Both run from the base install (standard library plus PyYAML): no database driver, no server.

- :mod:`coordd.inject.annotations`: the ``coordd.io/`` annotations, checked in one place;
- :mod:`coordd.inject.patch`: :func:`plan_injection`, the one function deciding what a pod gets;
- :mod:`coordd.inject.webhook`: the HTTPS ``/mutate`` endpoint (``coordd inject-webhook``);
- :mod:`coordd.inject.offline`: manifests on disk (``coordd inject -f``).
"""

from coordd.inject.annotations import AnnotationError
from coordd.inject.config import InjectConfig
from coordd.inject.patch import Injection, apply_patch, plan_injection

__all__ = ["AnnotationError", "InjectConfig", "Injection", "apply_patch", "plan_injection"]
