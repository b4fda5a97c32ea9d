"""Every DESIGN.md §8 row this daemon produces, end to end: status code, reason, exception.

Rows of later services (REVISION_MISMATCH, REVISION_COMPACTED) are tested with those services.
"""

from __future__ import annotations

import grpc
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from coordd import rpc_status
from coordd.v1 import claim_service_pb2 as pb
from coordd.v1 import claim_service_pb2_grpc as pb_grpc
from coordd_client import (
    AsyncClient,
    ClaimNotHeldError,
    CoorddError,
    FencingTokenStaleError,
    IdempotencyInFlightError,
    IdempotencyKeyReusedError,
    InternalError,
    InvalidArgumentError,
    PermissionDeniedError,
    StorageUnavailableError,
    UnauthenticatedError,
)
from tests.fix_daemon import write_policy

NS = "acme/errors"


def _wire(err: CoorddError) -> tuple[grpc.StatusCode, str]:
    cause = err.__cause__
    assert isinstance(cause, grpc.aio.AioRpcError), "the client must chain the RPC error"
    return cause.code(), rpc_status.from_rpc_error(cause).reason


async def test_claim_not_held(connect) -> None:
    a, b = await connect("agent-a"), await connect("agent-b")
    got = await a.claims.acquire(NS, "r", ttl=30)
    assert got.claim
    with pytest.raises(ClaimNotHeldError) as exc:
        await b.claims.release(NS, "r", got.claim.fencing_token)
    assert _wire(exc.value) == (grpc.StatusCode.FAILED_PRECONDITION, "CLAIM_NOT_HELD")
    assert exc.value.holder_agent_id == "agent-a"
    assert exc.value.fencing_token == got.claim.fencing_token
    assert exc.value.expire_time == got.claim.expire_time


async def test_fencing_token_stale(connect, db_clock) -> None:
    a, b = await connect("agent-a"), await connect("agent-b")
    old = await a.claims.acquire(NS, "r", ttl=5)
    begun = await a.idempotency.begin(NS, "job-1", b"fp")
    db_clock.advance(6)
    new = await b.claims.acquire(NS, "r", ttl=5)
    assert old.claim and new.claim
    with pytest.raises(FencingTokenStaleError) as exc:
        await a.idempotency.complete(NS, "job-1", begun.attempt, b"late", fence=old.claim.fence)
    assert _wire(exc.value) == (grpc.StatusCode.FAILED_PRECONDITION, "FENCING_TOKEN_STALE")
    assert exc.value.presented_token == old.claim.fencing_token
    assert exc.value.current_token == new.claim.fencing_token
    record = await a.idempotency.get(NS, "job-1")
    assert record is not None and record.result == b"", "a fenced-off write must not land"


async def test_idempotency_key_reused(connect) -> None:
    a = await connect("agent-a")
    await a.idempotency.begin(NS, "job-1", b"payload-1")
    with pytest.raises(IdempotencyKeyReusedError) as exc:
        await a.idempotency.begin(NS, "job-1", b"payload-2")
    assert _wire(exc.value) == (grpc.StatusCode.FAILED_PRECONDITION, "IDEMPOTENCY_KEY_REUSED")
    assert (exc.value.namespace, exc.value.key) == (NS, "job-1")


async def test_idempotency_key_in_flight(connect) -> None:
    """Begin answers IN_PROGRESS in-band; ``once`` raises the error when it cannot wait more."""
    a, b = await connect("agent-a"), await connect("agent-b")
    await a.idempotency.begin(NS, "job-1", _fp({"x": 1}), lease=60)
    with pytest.raises(IdempotencyInFlightError) as exc:
        await b.idempotency.once(NS, "job-1", {"x": 1}, lambda: 1, max_wait=0.0)
    assert exc.value.code == grpc.StatusCode.ABORTED
    assert exc.value.reason == "IDEMPOTENCY_KEY_IN_FLIGHT"
    assert 0 < exc.value.retry_after.total_seconds() <= 5


def _fp(payload: object) -> bytes:
    from coordd_client import fingerprint

    return fingerprint(payload)


async def test_permission_denied(start_daemon, tmp_path) -> None:
    policy = write_policy(
        tmp_path,
        """
[[grants]]
role = "worker"
namespaces = ["acme/work/**"]
operations = ["read", "claim"]
""",
    )
    d = start_daemon(policy_file=policy)
    async with await AsyncClient.connect(d.address, agent_id="w1", role="worker") as c:
        assert (await c.claims.acquire("acme/work/x", "r", ttl=5)).acquired
        with pytest.raises(PermissionDeniedError) as exc:
            await c.claims.acquire("acme/secret", "r", ttl=5)
        assert _wire(exc.value) == (grpc.StatusCode.PERMISSION_DENIED, "SCOPE_NOT_GRANTED")
        assert (exc.value.permission, exc.value.namespace) == ("claim", "acme/secret")
        with pytest.raises(PermissionDeniedError):  # read granted, write not
            await c.idempotency.begin("acme/work/x", "k", b"")
    async with await AsyncClient.connect(d.address, agent_id="p1", role="planner") as c:
        with pytest.raises(PermissionDeniedError):
            await c.claims.get("acme/work/x", "r")


async def test_unauthenticated(daemon, start_daemon, tmp_path) -> None:
    channel = grpc.aio.insecure_channel(daemon.address)
    stub = pb_grpc.ClaimServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raw:
        await stub.GetClaim(pb.GetClaimRequest(namespace=NS, resource="r"))
    await channel.close()
    assert raw.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert isinstance(rpc_status.from_rpc_error(raw.value), UnauthenticatedError)

    import hashlib

    digest = hashlib.sha256(b"s3cret").hexdigest()
    policy = write_policy(
        tmp_path,
        f"""
[[agents]]
id = "planner-1"
role = "planner"
token_sha256 = "{digest}"

[[grants]]
role = "planner"
namespaces = ["**"]
operations = ["read", "write", "claim"]
""",
    )
    d = start_daemon(auth="token", policy_file=policy)
    async with await AsyncClient.connect(d.address, agent_id="x", token="wrong") as bad:
        with pytest.raises(UnauthenticatedError) as exc:
            await bad.claims.get(NS, "r")
        assert _wire(exc.value) == (grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED")
    async with await AsyncClient.connect(d.address, agent_id="spoof", token="s3cret") as spoof:
        with pytest.raises(UnauthenticatedError, match="belongs to agent 'planner-1'"):
            await spoof.claims.get(NS, "r")  # naming another agent than the token's is refused
    async with await AsyncClient.connect(d.address, agent_id="", token="s3cret") as good:
        got = await good.claims.acquire(NS, "r", ttl=5)
        assert got.claim and got.claim.holder_agent_id == "planner-1", "identity is the token's"


async def test_invalid_argument_names_every_bad_field(connect) -> None:
    a = await connect("agent-a")
    with pytest.raises(InvalidArgumentError) as exc:
        await a.claims.acquire("acme//bad ns", "", ttl=0)
    assert _wire(exc.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
    assert [v.field for v in exc.value.violations] == ["namespace", "resource", "ttl"]
    with pytest.raises(InvalidArgumentError) as exc:
        await a.claims.acquire_any(NS, ["a", "a"], ttl=5)
    assert [v.field for v in exc.value.violations] == ["resources"]
    with pytest.raises(InvalidArgumentError) as exc:
        await a.idempotency.complete(NS, "k" * 300, 0, b"x" * ((1 << 20) + 1))
    assert [v.field for v in exc.value.violations] == ["key", "attempt", "result"]
    with pytest.raises(InvalidArgumentError) as exc:
        await a.claims.list(NS, page_token="!!not-a-token!!")
    assert [v.field for v in exc.value.violations] == ["page_token"]


async def test_storage_unavailable_then_recovers(start_daemon, scratch_dsn, pg_dsn) -> None:
    d = start_daemon(dsn=scratch_dsn, pool_timeout_s=1.0, pool_min=1)
    name = conninfo_to_dict(scratch_dsn)["dbname"]
    async with await AsyncClient.connect(d.address, agent_id="a") as c:
        assert (await c.claims.acquire(NS, "r", ttl=30)).acquired
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
        with pytest.raises(StorageUnavailableError) as exc:
            await c.claims.get(NS, "r")
        assert _wire(exc.value) == (grpc.StatusCode.UNAVAILABLE, "STORAGE_UNAVAILABLE")
        assert exc.value.retry_after.total_seconds() > 0
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
        claim = await c.claims.get(NS, "r")  # nothing was lost, the daemon serves again
        assert claim is not None and claim.holder_agent_id == "a"


async def test_internal_error_leaks_nothing(start_daemon, scratch_dsn, caplog) -> None:
    d = start_daemon(dsn=scratch_dsn)
    with psycopg.connect(scratch_dsn, autocommit=True) as conn:
        conn.execute("DROP FUNCTION coordd.release_claim")  # a bug, as far as callers can tell
    async with await AsyncClient.connect(d.address, agent_id="a") as c:
        got = await c.claims.acquire(NS, "r", ttl=30)
        assert got.claim
        with pytest.raises(InternalError) as exc:
            await c.claims.release(NS, "r", got.claim.fencing_token)
        assert _wire(exc.value) == (grpc.StatusCode.INTERNAL, "INTERNAL")
        assert exc.value.trace_id and exc.value.trace_id in exc.value.message
        assert "release_claim" not in exc.value.message
        assert "psycopg" not in exc.value.message
        assert (await c.claims.get(NS, "r")) is not None, "the daemon keeps serving"
    assert any(exc.value.trace_id in r.getMessage() for r in caplog.records)
