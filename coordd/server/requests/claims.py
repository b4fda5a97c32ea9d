"""ClaimService requests, read and checked."""

from __future__ import annotations

from datetime import timedelta

from coordd.domain import claims as cl
from coordd.domain import validation as v
from coordd.domain.models import Fence
from coordd.server import convert
from coordd.v1 import claim_service_pb2 as pb

HOLDER_MAX_BYTES = 128


def _name(c: v.Checker, namespace: str, resource: str) -> None:
    c.namespace("namespace", namespace)
    c.name("resource", resource, v.RESOURCE_MAX_BYTES)


def _many(req: pb.AcquireAnyClaimRequest | pb.AcquireClaimsRequest) -> cl.AcquireMany:
    ttl = convert.duration(req.ttl, req.HasField("ttl"), "ttl")
    resources = list(req.resources)
    with v.checking() as c:
        c.namespace("namespace", req.namespace)
        if not 1 <= len(resources) <= v.MAX_RESOURCES_PER_CALL:
            c.fail("resources", f"must list 1 to {v.MAX_RESOURCES_PER_CALL} resources")
        for i, resource in enumerate(resources):
            c.name(f"resources[{i}]", resource, v.RESOURCE_MAX_BYTES)
        if len(set(resources)) != len(resources):
            c.fail("resources", "must not contain duplicates")
        c.duration("ttl", ttl, v.CLAIM_TTL_MIN, v.CLAIM_TTL_MAX, required=True)
        c.text("progress", req.progress, v.PROGRESS_MAX_BYTES)
    assert ttl is not None
    return cl.AcquireMany(
        namespace=req.namespace, resources=resources, ttl=ttl, progress=req.progress
    )


def acquire_claim(req: pb.AcquireClaimRequest) -> cl.Acquire:
    ttl = convert.duration(req.ttl, req.HasField("ttl"), "ttl")
    wait = convert.duration(req.wait, req.HasField("wait"), "wait")
    with v.checking() as c:
        _name(c, req.namespace, req.resource)
        c.duration("ttl", ttl, v.CLAIM_TTL_MIN, v.CLAIM_TTL_MAX, required=True)
        c.duration("wait", wait, timedelta(0), v.CLAIM_WAIT_MAX)
        c.text("progress", req.progress, v.PROGRESS_MAX_BYTES)
    assert ttl is not None
    return cl.Acquire(
        namespace=req.namespace,
        resource=req.resource,
        ttl=ttl,
        wait=wait or timedelta(0),
        progress=req.progress,
    )


acquire_any_claim = _many
acquire_claims = _many


def renew_claim(req: pb.RenewClaimRequest) -> cl.Renewal:
    ttl = convert.duration(req.ttl, req.HasField("ttl"), "ttl")
    progress = req.progress if req.HasField("progress") else None
    with v.checking() as c:
        _name(c, req.namespace, req.resource)
        c.positive("fencing_token", req.fencing_token)
        c.duration("ttl", ttl, v.CLAIM_TTL_MIN, v.CLAIM_TTL_MAX, required=True)
        c.text("progress", progress or "", v.PROGRESS_MAX_BYTES)
    assert ttl is not None
    return cl.Renewal(
        namespace=req.namespace,
        resource=req.resource,
        token=req.fencing_token,
        ttl=ttl,
        progress=progress,
    )


def release_claim(req: pb.ReleaseClaimRequest) -> Fence:
    """The claim to release, named as a fence: only its holder's token releases it."""
    with v.checking() as c:
        _name(c, req.namespace, req.resource)
        c.positive("fencing_token", req.fencing_token)
    return Fence(namespace=req.namespace, resource=req.resource, token=req.fencing_token)


def get_claim(req: pb.GetClaimRequest) -> cl.ClaimKey:
    with v.checking() as c:
        _name(c, req.namespace, req.resource)
    return cl.ClaimKey(namespace=req.namespace, resource=req.resource)


def list_claims(req: pb.ListClaimsRequest) -> cl.ClaimListing:
    with v.checking() as c:
        c.namespace("namespace", req.namespace)
        c.page_size("page_size", req.page_size)
        if req.holder_agent_id:
            c.name("holder_agent_id", req.holder_agent_id, HOLDER_MAX_BYTES)
    return cl.ClaimListing(
        namespace=req.namespace,
        holder=req.holder_agent_id,
        after=convert.decode_page_token(req.page_token),
        limit=req.page_size or v.DEFAULT_PAGE_SIZE,
    )
