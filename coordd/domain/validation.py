"""Input rules (DESIGN.md §2, §7): names, sizes, durations. Violations name the field at fault."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Sequence
from datetime import timedelta

from coordd.errors import FieldViolation, InvalidArgumentError

NAMESPACE_MAX_BYTES = 256
NAMESPACE_MAX_SEGMENTS = 8
_SEGMENT = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_AGENT_ID = re.compile(r"[A-Za-z0-9._:@/-]{1,128}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

RESOURCE_MAX_BYTES = 256
IDEMPOTENCY_KEY_MAX_BYTES = 255
PROGRESS_MAX_BYTES = 1024
FINGERPRINT_MAX_BYTES = 64
RESULT_MAX_BYTES = 1 << 20
ERROR_TEXT_MAX_BYTES = 4096
MAX_RESOURCES_PER_CALL = 1000
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100

CLAIM_TTL_MIN = timedelta(milliseconds=100)
CLAIM_TTL_MAX = timedelta(hours=24)
CLAIM_WAIT_MAX = timedelta(minutes=5)
IDEMPOTENCY_LEASE_DEFAULT = timedelta(seconds=60)
IDEMPOTENCY_LEASE_MIN = timedelta(seconds=1)
IDEMPOTENCY_LEASE_MAX = timedelta(hours=24)
IDEMPOTENCY_RETENTION_DEFAULT = timedelta(hours=24)
IDEMPOTENCY_RETENTION_MIN = timedelta(minutes=1)
IDEMPOTENCY_RETENTION_MAX = timedelta(days=30)
AGREEMENT_MAX_PARTICIPANTS = 64
AGREEMENT_MAX_SEATS = 256
AGREEMENT_MAX_WRITES = 100
AGREEMENT_DEADLINE_MIN = timedelta(milliseconds=100)
AGREEMENT_DEADLINE_MAX = timedelta(days=7)
AGREEMENT_RETENTION_DEFAULT = timedelta(hours=24)
AGREEMENT_RETENTION_MIN = timedelta(minutes=1)
AGREEMENT_RETENTION_MAX = timedelta(days=30)
AGREEMENT_WAIT_MAX = timedelta(minutes=5)
REASON_MAX_BYTES = 1024
"""A caller's stated reason: a vote's, an admin action's."""


CONTEXT_TYPE_MAX_BYTES = 64
TASK_ID_MAX_BYTES = 255
JSON_MAX_BYTES = 1 << 20
VECTOR_MAX_ENTRIES = 1000
MAX_IDS_PER_CALL = 1000
CONTEXT_TTL_DEFAULT = timedelta(days=7)
CONTEXT_TYPE_DEFAULT = "message"  # the type of a post that names none
CONTEXT_TTL_MIN = timedelta(seconds=1)
CONTEXT_TTL_MAX = timedelta(days=365)
CONTEXT_LEASE_DEFAULT = timedelta(seconds=60)
CONTEXT_LEASE_MIN = timedelta(seconds=1)
CONTEXT_LEASE_MAX = timedelta(hours=1)


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def json_problem(text: str) -> str | None:
    """What is wrong with a JSON text (strict: no NaN or Infinity), or None."""
    try:
        json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        return f"is not valid JSON ({str(exc).splitlines()[0][:80]})"
    if "\\u0000" in text:
        return "must not contain \\u0000 (PostgreSQL JSON cannot store it)"
    return None


@functools.lru_cache(maxsize=4096)  # agents name the same few namespaces on every call
def namespace_problem(value: str) -> str | None:
    """Describe what is wrong with a namespace, or None if it is valid."""
    if not value:
        return "is required"
    if len(value.encode()) > NAMESPACE_MAX_BYTES:
        return f"must be at most {NAMESPACE_MAX_BYTES} bytes"
    segments = value.split("/")
    if len(segments) > NAMESPACE_MAX_SEGMENTS:
        return f"must have at most {NAMESPACE_MAX_SEGMENTS} segments"
    for seg in segments:
        if not _SEGMENT.fullmatch(seg):
            return (
                f"segment {seg[:70]!r} must be 1-64 characters of A-Z a-z 0-9 . _ : - "
                "(segments are joined by '/')"
            )
    return None


def agent_id_problem(value: str) -> str | None:
    """Describe what is wrong with an agent id or role, or None."""
    if not _AGENT_ID.fullmatch(value):
        return "must be 1-128 characters of A-Z a-z 0-9 . _ : @ / -"
    return None


class Checker:
    """Collects every violation of a request, then raises them together.

    Use as a context manager: ``with Checker() as c: c.namespace("namespace", req.namespace)``.
    """

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def __enter__(self) -> Checker:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None and self.violations:
            raise InvalidArgumentError(self.violations)

    def fail(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def namespace(self, field: str, value: str) -> None:
        problem = namespace_problem(value)
        if problem:
            self.fail(field, problem)

    def name(self, field: str, value: str, max_bytes: int) -> None:
        """A resource, key or id: 1..max_bytes of UTF-8 with no control characters."""
        if not value:
            self.fail(field, "is required")
        elif len(value.encode()) > max_bytes:
            self.fail(field, f"must be at most {max_bytes} bytes")
        elif _CONTROL.search(value):
            self.fail(field, "must not contain control characters")

    def text(self, field: str, value: str, max_bytes: int) -> None:
        """Free text: at most *max_bytes* of UTF-8, without NUL (PostgreSQL cannot store it)."""
        if len(value.encode()) > max_bytes:
            self.fail(field, f"must be at most {max_bytes} bytes")
        elif "\x00" in value:
            self.fail(field, "must not contain NUL characters (U+0000)")

    def blob(self, field: str, value: bytes, max_bytes: int) -> None:
        if len(value) > max_bytes:
            self.fail(field, f"must be at most {max_bytes} bytes")

    def positive(self, field: str, value: int) -> None:
        if value <= 0:
            self.fail(field, "must be > 0")

    def duration(
        self,
        field: str,
        value: timedelta | None,
        low: timedelta,
        high: timedelta,
        *,
        required: bool = False,
    ) -> None:
        if value is None:
            if required:
                self.fail(field, "is required")
            return
        if not low <= value <= high:
            self.fail(field, f"must be between {_fmt(low)} and {_fmt(high)}")

    def json(self, field: str, value: str, *, required: bool = True) -> None:
        if not value:
            if required:
                self.fail(field, "is required (JSON text)")
            return
        if len(value.encode()) > JSON_MAX_BYTES:
            self.fail(field, f"must be at most {JSON_MAX_BYTES} bytes")
        elif problem := json_problem(value):
            self.fail(field, problem)

    def identifier(self, field: str, value: str) -> None:
        """An agent id or role."""
        if problem := agent_id_problem(value):
            self.fail(field, problem)

    def vector(self, field: str, vector: dict[str, int]) -> None:
        if len(vector) > VECTOR_MAX_ENTRIES:
            self.fail(field, f"must have at most {VECTOR_MAX_ENTRIES} namespaces")
            return
        for ns, revision in vector.items():
            if (problem := namespace_problem(ns)) is not None:
                self.fail(f"{field}[{ns[:40]!r}]", f"namespace {problem}")
            elif revision < 0:
                self.fail(f"{field}[{ns!r}]", "revision must be >= 0")

    def min_revision(self, field: str, value: int) -> None:
        if value < 0:
            self.fail(field, "must be >= 0 (0 = any revision)")

    def page_size(self, field: str, value: int) -> None:
        if not 0 <= value <= MAX_PAGE_SIZE:
            self.fail(field, f"must be between 0 and {MAX_PAGE_SIZE} (0 means {DEFAULT_PAGE_SIZE})")


def checking() -> Checker:
    """``with checking() as c:`` collects violations and raises InvalidArgumentError at exit.

    The Checker itself is the context manager: every request is checked this way, and a
    generator-based one cost a frame and two resumptions per call."""
    return Checker()


def _fmt(d: timedelta) -> str:
    seconds = d.total_seconds()
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


MEMORY_KEY_MAX_BYTES = 512
MEMORY_TEXT_MAX_BYTES = 64 * 1024
EMBEDDING_MAX_DIM = 4096
MAX_TAGS = 32
TAG_MAX_BYTES = 64
MAX_DERIVED = 100
MAX_PUT_BATCH = 1000
"""Entries in one PutMemories call."""
MAX_SEARCH_K = 1000
MAX_PREFIXES = 64
MEMORY_TTL_MIN = timedelta(seconds=1)
MEMORY_TTL_MAX = timedelta(days=3650)
TASK_LEASE_DEFAULT = timedelta(hours=1)
TASK_LEASE_MIN = timedelta(seconds=1)
TASK_LEASE_MAX = timedelta(days=7)


def embedding_problem(values: Sequence[float], *, required: bool = False) -> str | None:
    """What is wrong with an embedding (dimension, non-finite values, zero norm), or None."""
    if not len(values):
        return "is required" if required else None
    if len(values) > EMBEDDING_MAX_DIM:
        return f"must have 1 to {EMBEDDING_MAX_DIM} dimensions"
    import numpy as np  # here: the sidecar imports this module in the base install (no numpy)

    # One pass: in float64 the sum of squares of finite float32 values (at most 4096 of
    # 3.4e38 squared) is finite, and any NaN or infinity makes it NaN or infinity.
    wide = np.asarray(values, dtype=np.float32).astype(np.float64)
    norm2 = float(np.dot(wide, wide))
    if not math.isfinite(norm2):
        return "must contain only finite numbers (no NaN or infinity)"
    if not norm2 > 0.0:
        return "must have a non-zero norm (cosine distance is undefined for it)"
    return None
