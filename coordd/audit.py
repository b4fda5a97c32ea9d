"""The audit trail: denials, authentication failures and admin actions, one JSON line each.

Every event goes to the ``coordd.audit`` logger as one JSON object (``time``, ``event``,
``agent_id``, ``role``, ``rpc``, ``namespace``, ``trace_id``, then event fields) and, when the
call is traced, as a span event ``coordd.audit.<event>`` with the same fields. The daemon sends
the logger to its own log, or with ``--audit-log FILE`` to a file holding nothing but these lines.
Credentials never appear: an authentication failure names what was wrong, not the token.
"""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from opentelemetry import trace

from coordd.domain.models import Identity
from coordd.telemetry import current_trace_id

LOGGER_NAME = "coordd.audit"
logger = logging.getLogger(LOGGER_NAME)

_rpc: contextvars.ContextVar[str] = contextvars.ContextVar("coordd_audit_rpc", default="")

DENIED = "denied"
"""A grant did not allow the operation (PERMISSION_DENIED)."""
UNAUTHENTICATED = "unauthenticated"
"""The caller's credentials were missing or not accepted (UNAUTHENTICATED)."""
ADMIN = "admin"
"""An admin action was carried out."""
LIMITED = "limited"
"""A caller was throttled (rate limit, stream cap)."""


def serving(method: str) -> None:
    """Name the RPC being served in this context (the interceptor calls it first)."""
    _rpc.set(method)


def record(
    event: str,
    who: Identity | None,
    namespace: str = "",
    **fields: str | int | float | bool,
) -> None:
    """Write one audit event (a JSON line, and a span event when traced)."""
    entry: dict[str, str | int | float | bool] = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "event": event,
        "agent_id": who.agent_id if who else "",
        "role": who.role if who else "",
        "rpc": _rpc.get(),
        "namespace": namespace,
        "trace_id": current_trace_id(),
        **fields,
    }
    logger.info("%s", json.dumps(entry, separators=(",", ":"), ensure_ascii=False))
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(
            f"coordd.audit.{event}",
            {f"coordd.audit.{k}": v for k, v in entry.items() if k not in ("time", "trace_id")},
        )


def to_file(path: Path) -> logging.Handler:
    """Send audit events to *path* (appended, one JSON line each, nothing else); returns the
    handler so the daemon can remove it at shutdown."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handler


def detach(handler: logging.Handler) -> None:
    """Undo :func:`to_file`."""
    logger.removeHandler(handler)
    handler.close()
    if not logger.handlers:
        logger.propagate = True
