"""Tool results an LLM can act on: what happened, and what to do next.

Every tool answers with one JSON object, as text (any MCP client shows it) and as structured
content. Outcomes the caller must handle are answers, not protocol errors: a claim held by
another agent is ``{"acquired": false, "summary": "... held by worker-2 until ...", "next":
"..."}``, and a coordd error is a tool result with ``isError`` set, its gRPC code and coordd
reason, the message, and a ``next`` line saying what to do (re-read, re-claim, retry later,
stop).
"""

from __future__ import annotations

import dataclasses
import enum
import json
from datetime import datetime, timedelta
from typing import Any

from mcp.types import CallToolResult, TextContent

from coordd import errors
from coordd.errors import CoorddError


def plain(value: Any) -> Any:
    """A JSON-ready copy of client models (dataclasses, datetimes, enums, bytes)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat().replace("+00:00", "Z")


def answer(data: dict[str, Any], *, error: bool = False) -> CallToolResult:
    """One tool result: the object as JSON text and as structured content."""
    body = plain(data)
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=body, is_error=error
    )


def failure(exc: CoorddError) -> CallToolResult:
    """A coordd error as a tool result: code, reason, message, details, and what to do."""
    body: dict[str, Any] = {
        "error": {"code": exc.code.name, "reason": exc.reason, "message": exc.message},
        "summary": f"{exc.code.name} {exc.reason}: {exc.message}",
        "next": advice(exc),
    }
    if isinstance(exc, errors.InvalidArgumentError):
        body["error"]["fields"] = [
            {"field": v.field, "problem": v.description} for v in exc.violations
        ]
    return answer(body, error=True)


def _claim_lost(exc: errors.ClaimNotHeldError) -> str:
    holder = (
        f"{exc.holder_agent_id} holds it until {iso(exc.expire_time)}"
        if exc.holder_agent_id
        else "nobody holds it now"
    )
    return (
        f"You no longer hold this claim ({holder}). Stop work done under it; if it is free,"
        " claim it again with claim_acquire and re-read what you rely on."
    )


# What an agent should do after each kind of coordd error: the first class that matches wins
# (specific classes before the ones they derive from). A callable reads the error's details.
ADVICE: tuple[tuple[type[CoorddError] | tuple[type[CoorddError], ...], Any], ...] = (
    (errors.ClaimNotHeldError, _claim_lost),
    (
        errors.FencingTokenStaleError,
        "Your claim was lost, so nothing was written. Stop: re-acquire the claim with"
        " claim_acquire, re-read the state, then redo the write with the new fence.",
    ),
    (
        errors.RevisionMismatchError,
        lambda exc: (
            f"The entry changed since you read it (now at revision"
            f" {exc.current_revision}). Read it again with memory_get, apply your change to the new"
            f" value, and retry with expected_revision={exc.current_revision}."
        ),
    ),
    (
        errors.UnconditionalWriteForbiddenError,
        "This namespace refuses last-write-wins: read the entry with memory_get and write"
        " with mode 'cas' and expected_revision (0 for a new key), or use mode 'merge'.",
    ),
    (
        errors.IdempotencyKeyReusedError,
        "This key was used for a different payload. Use a new key for a different side"
        " effect; to learn the stored outcome, call once_begin with the original payload.",
    ),
    (
        errors.IdempotencyInFlightError,
        "Another runner is executing this side effect: call once_begin again shortly.",
    ),
    (
        errors.IdempotencyAttemptSupersededError,
        lambda exc: (
            f"Your attempt lapsed and attempt {exc.current_attempt} took over: do not"
            " report a result; call once_begin to learn the outcome."
        ),
    ),
    (
        (errors.AgreementDecidedError, errors.VoteAlreadyCastError),
        "The agreement is settled as it stands: read it with agreement_get and act on it.",
    ),
    (
        errors.NotAParticipantError,
        "This agent holds no seat in the agreement: it cannot vote; read it instead.",
    ),
    (
        errors.AgreementExistsError,
        "An agreement with this id but other terms exists: read it or choose another id.",
    ),
    (errors.NotFoundError, "Nothing exists there: check the namespace and key or id."),
    (
        errors.PermissionDeniedError,
        "This agent is not granted that on this namespace: work in a namespace it may use,"
        " or ask an operator for a grant. Retrying will not help.",
    ),
    (
        errors.UnauthenticatedError,
        "coordd refused this server's credentials: an operator must fix its token.",
    ),
    (errors.InvalidArgumentError, "Fix the arguments listed in error.fields and call again."),
    (
        errors.RevisionCompactedError,
        lambda exc: f"That history is gone: start again from revision {exc.compact_revision}.",
    ),
)


def advice(exc: CoorddError) -> str:
    """What an agent should do after *exc*, in one sentence."""
    for kind, said in ADVICE:
        if isinstance(exc, kind):
            return said if isinstance(said, str) else str(said(exc))
    if exc.code.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
        return "coordd is unreachable or busy right now: retry the same call in a few seconds."
    if isinstance(exc, errors.InternalError):
        return "A coordd bug: report it with the message above; do not retry in a loop."
    return "Read the message above; retrying the same call unchanged will fail the same way."
