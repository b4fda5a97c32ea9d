"""GateService requests, read and checked."""

from __future__ import annotations

from coordd.domain import gate
from coordd.domain import validation as v
from coordd.domain.models import Fence
from coordd.server.requests import check_fence
from coordd.v1 import gate_service_pb2 as pb


def check_gate(req: pb.CheckGateRequest) -> gate.GateCheck:
    read = dict(req.read.revisions)
    with v.checking() as c:
        if len(req.fences) > gate.MAX_FENCES:
            c.fail("fences", f"must list at most {gate.MAX_FENCES} fences")
        for i, fence in enumerate(req.fences[: gate.MAX_FENCES]):
            check_fence(c, fence, True, f"fences[{i}]")
        if len(read) > gate.MAX_READ_NAMESPACES:
            c.fail("read", f"must have at most {gate.MAX_READ_NAMESPACES} namespaces")
        else:
            c.vector("read", read)
        for i, kind in enumerate(req.kinds):
            if kind not in gate.CHANGE_KINDS:
                c.fail(f"kinds[{i}]", f"must be one of {', '.join(gate.CHANGE_KINDS)}")
        if len(set(req.kinds)) != len(req.kinds):
            c.fail("kinds", "must not contain duplicates")
    fences = [Fence(namespace=f.namespace, resource=f.resource, token=f.token) for f in req.fences]
    return gate.GateCheck(fences=fences, read=read, kinds=list(req.kinds))
