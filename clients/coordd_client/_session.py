"""The session's version vector: the largest revision seen per namespace (DESIGN.md §2)."""

from __future__ import annotations

import threading
from collections.abc import Mapping

from google.protobuf.message import Message


class Session:
    """Tracks what this agent has written or read, per namespace.

    Every response header is folded in; reads can pass ``min_revision`` from here to get
    read-your-writes and monotonic reads from any replica or cache. Thread-safe.
    """

    def __init__(self) -> None:
        self._vector: dict[str, int] = {}
        self._lock = threading.Lock()

    def observe(self, namespace: str, revision: int) -> None:
        if not namespace:
            return
        with self._lock:
            if revision > self._vector.get(namespace, 0):
                self._vector[namespace] = revision

    def merge(self, vector: Mapping[str, int]) -> None:
        """Fold in another vector (e.g. the sender's, carried by a context entry)."""
        for namespace, revision in vector.items():
            self.observe(namespace, revision)

    def revision(self, namespace: str) -> int:
        with self._lock:
            return self._vector.get(namespace, 0)

    @property
    def vector(self) -> dict[str, int]:
        """A copy of the vector."""
        with self._lock:
            return dict(self._vector)


def request_namespace(request: Message) -> str:
    """The namespace a request is about (``namespace`` or ``namespace_prefix``), or ""."""
    fields = request.DESCRIPTOR.fields_by_name
    for name in ("namespace", "namespace_prefix"):
        if name in fields:
            return str(getattr(request, name))
    return ""


def stamp_min_revision(request: Message, session: Session) -> int:
    """Raise the request's ``min_revision`` to the session's revision of its namespace.

    Generic over every read that has the field (Get, List, History, ReadContext,
    GetIdempotency, and any added later): a read never asks for less than the session has
    seen. Returns the revision the request now carries (0 for requests without the field).
    """
    if "min_revision" not in request.DESCRIPTOR.fields_by_name:
        return 0
    floor = session.revision(request_namespace(request))
    current = int(request.min_revision)  # type: ignore[attr-defined]
    if floor > current:
        request.min_revision = floor  # type: ignore[attr-defined]
        return floor
    return current
