"""The ``coordd.io/`` pod annotations that drive sidecar injection, read and checked in one place.

Like dapr's ``annotations.go``: every key the injector understands is a constant here, and a pod
that opts in with an unknown or malformed ``coordd.io/`` annotation is refused with a message
naming the annotation, the value and what would be valid, so a typo never passes silently.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "coordd.io/"
INJECT = PREFIX + "inject"
"""``"true"`` opts the pod in; ``"false"`` or absent leaves it alone."""
AGENT_ID = PREFIX + "agent-id"
"""The agent's id (default: the pod's service account name)."""
ROLE = PREFIX + "role"
"""The agent's role (default ``agent``): the identity without a token, a label with one."""
TOKEN_SECRET = PREFIX + "token-secret"
"""A Secret in the pod's namespace with key ``token`` (and ``ca.crt``, the daemon's CA)."""
SIDECAR_CPU = PREFIX + "sidecar-cpu"
"""The sidecar's CPU request (a Kubernetes quantity such as ``100m``)."""
SIDECAR_MEMORY = PREFIX + "sidecar-memory"
"""The sidecar's memory request and limit (a Kubernetes quantity such as ``128Mi``)."""
STATUS = PREFIX + "status"
"""Written by the injector (``injected``) so ``kubectl describe`` shows what happened."""

KNOWN = frozenset({INJECT, AGENT_ID, ROLE, TOKEN_SECRET, SIDECAR_CPU, SIDECAR_MEMORY, STATUS})

# The daemon's rule for agent ids and roles (coordd.domain.validation.agent_id_problem), kept
# here too because the injector ships in the base install, which has no domain layer.
_AGENT_ID = re.compile(r"[A-Za-z0-9._:@/-]{1,128}")
# DNS-1123 subdomain: what Kubernetes accepts as a Secret name.
_SECRET_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_CPU = re.compile(r"(?:[0-9]+m|[0-9]+(?:\.[0-9]{1,3})?)")
_MEMORY = re.compile(r"[0-9]+(?:[kMGTPE]|[KMGTPE]i)?")


class AnnotationError(ValueError):
    """An opted-in pod carries a ``coordd.io/`` annotation that cannot work.

    Attributes:
        annotation: the annotation's key, e.g. ``coordd.io/sidecar-cpu``.
    """

    def __init__(self, annotation: str, problem: str) -> None:
        super().__init__(f"annotation {annotation}: {problem}")
        self.annotation = annotation


@dataclass(frozen=True, slots=True, kw_only=True)
class PodOptions:
    """What one opted-in pod asks of its sidecar, after checking its annotations."""

    agent_id: str
    """The agent's id: ``coordd.io/agent-id``, else the pod's service account name."""
    role: str
    """``coordd.io/role``, default ``agent``."""
    token_secret: str | None
    """``coordd.io/token-secret``: the Secret mounted as the sidecar's credentials."""
    cpu: str
    """The sidecar's CPU request."""
    memory: str
    """The sidecar's memory request and limit."""


def wants_injection(annotations: Mapping[str, str]) -> bool:
    """True if ``coordd.io/inject`` opts the pod in.

    Raises:
        AnnotationError: the annotation is neither ``"true"`` nor ``"false"``.
    """
    value = annotations.get(INJECT)
    if value is None or value == "false":
        return False
    if value == "true":
        return True
    raise AnnotationError(INJECT, f'{value!r} is not valid: use "true" or "false"')


def pod_options(
    annotations: Mapping[str, str],
    service_account: str,
    *,
    default_cpu: str,
    default_memory: str,
) -> PodOptions:
    """Read the sidecar's options from an opted-in pod's annotations.

    Args:
        annotations: the pod's (or pod template's) annotations.
        service_account: the pod's service account, the default agent id.
        default_cpu: the CPU request when ``coordd.io/sidecar-cpu`` is absent.
        default_memory: the memory when ``coordd.io/sidecar-memory`` is absent.

    Raises:
        AnnotationError: the first annotation at fault, with what would be valid.
    """
    for key in sorted(annotations):
        if key.startswith(PREFIX) and key not in KNOWN:
            close = difflib.get_close_matches(key, sorted(KNOWN), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise AnnotationError(
                key, f"unknown; {hint}coordd understands " + ", ".join(sorted(KNOWN))
            )
    agent_id = annotations.get(AGENT_ID, service_account)
    if not _AGENT_ID.fullmatch(agent_id):
        key = AGENT_ID if AGENT_ID in annotations else "spec.serviceAccountName (the default)"
        raise AnnotationError(
            key, f"{agent_id[:140]!r} must be 1-128 characters of A-Z a-z 0-9 . _ : @ / -"
        )
    role = annotations.get(ROLE, "agent")
    if not _AGENT_ID.fullmatch(role):
        raise AnnotationError(
            ROLE, f"{role[:140]!r} must be 1-128 characters of A-Z a-z 0-9 . _ : @ / -"
        )
    secret = annotations.get(TOKEN_SECRET)
    if secret is not None and (len(secret) > 253 or not _SECRET_NAME.fullmatch(secret)):
        raise AnnotationError(
            TOKEN_SECRET,
            f"{secret[:260]!r} is not a Secret name (lowercase a-z 0-9 - ., at most 253)",
        )
    cpu = annotations.get(SIDECAR_CPU, default_cpu)
    if problem := cpu_problem(cpu):
        raise AnnotationError(SIDECAR_CPU, problem)
    memory = annotations.get(SIDECAR_MEMORY, default_memory)
    if problem := memory_problem(memory):
        raise AnnotationError(SIDECAR_MEMORY, problem)
    return PodOptions(agent_id=agent_id, role=role, token_secret=secret, cpu=cpu, memory=memory)


def cpu_problem(value: str) -> str | None:
    """Describe what is wrong with a CPU quantity for the sidecar, or None."""
    if not _CPU.fullmatch(value) or _is_zero(value):
        return f"{value[:40]!r} is not a CPU quantity above zero (e.g. 100m, 0.5, 1)"
    return None


def memory_problem(value: str) -> str | None:
    """Describe what is wrong with a memory quantity for the sidecar, or None."""
    if not _MEMORY.fullmatch(value) or _is_zero(value):
        return f"{value[:40]!r} is not a memory quantity above zero (e.g. 128Mi, 1Gi, 200M)"
    return None


def _is_zero(quantity: str) -> bool:
    return float(re.sub(r"[^0-9.]", "", quantity)) == 0
