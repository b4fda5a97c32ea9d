"""WatchService requests, read and checked."""

from __future__ import annotations

from coordd.domain import validation as v
from coordd.domain.watch import WatchQuery
from coordd.v1 import watch_service_pb2 as pb


def watch(req: pb.WatchRequest) -> WatchQuery:
    after = dict(req.after.revisions)
    with v.checking() as c:
        c.namespace("namespace", req.namespace)
        if req.start_revision < 0:
            c.fail("start_revision", "must be >= 0 (0 = only new changes)")
        c.vector("after", after)
    return WatchQuery(
        namespace=req.namespace,
        prefix=req.prefix,
        start_revision=req.start_revision,
        after=after,
    )
