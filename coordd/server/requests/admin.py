"""AdminService requests, read and checked."""

from __future__ import annotations

from coordd.domain import admin
from coordd.domain import validation as v
from coordd.v1 import admin_service_pb2 as pb


def force_release_claim(req: pb.ForceReleaseClaimRequest) -> admin.ForceRelease:
    with v.checking() as c:
        c.namespace("namespace", req.namespace)
        c.name("resource", req.resource, v.RESOURCE_MAX_BYTES)
        c.text("reason", req.reason, v.REASON_MAX_BYTES)
    return admin.ForceRelease(namespace=req.namespace, resource=req.resource, reason=req.reason)


def purge_namespace(req: pb.PurgeNamespaceRequest) -> admin.Purge:
    with v.checking() as c:
        c.namespace("namespace", req.namespace)
        c.text("reason", req.reason, v.REASON_MAX_BYTES)
    return admin.Purge(namespace=req.namespace, reason=req.reason)
