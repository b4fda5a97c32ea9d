"""How each service reads its requests: one module per service, one function per RPC, named like
the RPC in snake case (``requests.put_memory(req)`` for ``PutMemory``).

A function takes the protobuf request, checks every field (all violations at once, as one
INVALID_ARGUMENT with field violations; coordd/domain/validation.py), and returns the values
the domain service takes: a servicer reads ``authorize -> requests.<rpc>(req) -> domain ->
response``, and a request is never read twice in two ways.
"""

from __future__ import annotations

from coordd.domain import validation as v
from coordd.v1 import common_pb2


def check_fence(c: v.Checker, fence: common_pb2.Fence, present: bool, field: str = "fence") -> None:
    """Validate an optional Fence field (every fenced write shares these rules)."""
    if present:
        c.namespace(f"{field}.namespace", fence.namespace)
        c.name(f"{field}.resource", fence.resource, v.RESOURCE_MAX_BYTES)
        c.positive(f"{field}.token", fence.token)
