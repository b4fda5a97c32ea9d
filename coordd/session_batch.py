"""Batching on the session stream: several requests or answers in one message.

A message on an open gRPC stream costs each end tens of microseconds of CPU whatever it
carries. When several requests are ready at once (concurrent callers sharing one client), or
several answers are (a group commit finishing many at once), they travel in one message's
``batch`` field. Nothing ever waits to fill a batch: what is ready goes now, and a single ready
message travels alone, exactly as without batching.

A peer that predates batching would ignore ``batch`` and lose what it carries, so each side
batches only after the other announced ``coordd-session-batch: <bytes>``, the largest batched
message it reads: the client in the stream's metadata, the server in its initial metadata.
Each side's batches stay within the smaller of its own limit and the other's. Shared by the
daemon's and sidecar's ``SessionServicer`` and the client's ``SessionChannel``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from coordd.v1 import session_service_pb2 as pb

BATCH_KEY = "coordd-session-batch"
"""Metadata key by which each side announces the largest batched message it reads (bytes)."""
MAX_BATCH_BYTES = 1 << 20
"""The default limit of a side's batches, sent and read: a quarter of gRPC's default 4 MiB
receive limit. A message larger than the limit in force still travels, alone."""
# A batch entry's envelope: the field tag and a length varint of up to 5 bytes.
_ENTRY_OVERHEAD = 6

Message = TypeVar("Message", pb.SessionRequest, pb.SessionResponse)


def announce(max_bytes: int) -> tuple[tuple[str, str]]:
    """The metadata entry announcing that batched messages up to *max_bytes* are read."""
    return ((BATCH_KEY, str(max_bytes)),)


def announced(metadata: Iterable[tuple[str, Any]] | None) -> int:
    """The largest batched message *metadata* (a stream's, or its initial metadata) says the
    peer reads; 0 if it announced nothing usable (then send it no batch)."""
    for key, value in metadata or ():
        if key == BATCH_KEY and isinstance(value, str) and value.isdigit():
            return int(value)
    return 0


def pack(messages: Sequence[Message], max_bytes: int, make: type[Message]) -> list[Message]:
    """*messages* as few messages as fit in *max_bytes* each, in order: a group of one is the
    message itself, a larger group one ``make(batch=...)`` envelope."""
    if len(messages) == 1:
        return [messages[0]]
    out: list[Message] = []
    group: list[Message] = []
    size = 0
    for message in messages:
        n = message.ByteSize() + _ENTRY_OVERHEAD
        if group and size + n > max_bytes:
            out.append(group[0] if len(group) == 1 else make(batch=group))
            group, size = [], 0
        group.append(message)
        size += n
    out.append(group[0] if len(group) == 1 else make(batch=group))
    return out
