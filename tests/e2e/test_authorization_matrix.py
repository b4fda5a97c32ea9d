"""The authorization matrix: 3 roles x 3 namespaces x every RPC of every service.

One token-mode daemon, one call per cell, data-driven: a cell whose role is granted the RPC's
operation on the namespace must not be refused (and most succeed outright); every other cell is
PERMISSION_DENIED and writes nothing, which the database proves (the revisions and row counts
of every table are the same after the refused call as before it). The table of RPCs is checked
against the services' descriptors, so a new RPC fails this test until it is given its row.
Then: Search never returns what the caller cannot read even when it is the nearest, and Watch
and SubscribeContext of a forbidden namespace are refused before any event.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
import psycopg
import pytest
from google.protobuf.message import Message

import coordd.v1
from coordd.domain.access import pattern_matches
from coordd.v1 import admin_service_pb2 as admin
from coordd.v1 import agreement_service_pb2 as agr
from coordd.v1 import claim_service_pb2 as claim
from coordd.v1 import context_service_pb2 as ctx
from coordd.v1 import gate_service_pb2 as gate
from coordd.v1 import idempotency_service_pb2 as idem
from coordd.v1 import memory_service_pb2 as mem
from coordd.v1 import session_service_pb2 as session
from coordd.v1 import watch_service_pb2 as watch
from coordd_client import AsyncClient, Participant, PermissionDeniedError
from tests.fix_daemon import write_policy

NAMESPACES = ("mx/a", "mx/b", "mx/c")
# role -> (agent, token, {operation: namespaces granted})
ROLES = {
    "reader": ("reader-1", "tok-r", {"read": ("mx/a", "mx/b/**")}),
    "writer": ("writer-1", "tok-w", {"read": ("mx/a",), "write": ("mx/a",), "claim": ("mx/a",)}),
    "operator": ("operator-1", "tok-o", {"admin": ("mx/b", "mx/c"), "read": ("mx/c",)}),
}
SEEDER = ("seeder-1", "tok-s")  # writes the data the reads find; not part of the matrix
SECONDS = {"seconds": 30}

Build = Callable[[str], Message]
# Full method name -> (operation it needs, a well-formed request for a namespace).
RPCS: dict[str, tuple[str, Build]] = {
    "/coordd.v1.ClaimService/AcquireClaim": (
        "claim",
        lambda ns: claim.AcquireClaimRequest(namespace=ns, resource="r1", ttl=SECONDS),
    ),
    "/coordd.v1.ClaimService/AcquireAnyClaim": (
        "claim",
        lambda ns: claim.AcquireAnyClaimRequest(namespace=ns, resources=["r2"], ttl=SECONDS),
    ),
    "/coordd.v1.ClaimService/AcquireClaims": (
        "claim",
        lambda ns: claim.AcquireClaimsRequest(namespace=ns, resources=["r3"], ttl=SECONDS),
    ),
    "/coordd.v1.ClaimService/RenewClaim": (
        "claim",
        lambda ns: claim.RenewClaimRequest(
            namespace=ns, resource="r1", fencing_token=1, ttl=SECONDS
        ),
    ),
    "/coordd.v1.ClaimService/ReleaseClaim": (
        "claim",
        lambda ns: claim.ReleaseClaimRequest(namespace=ns, resource="r1", fencing_token=1),
    ),
    "/coordd.v1.ClaimService/GetClaim": (
        "read",
        lambda ns: claim.GetClaimRequest(namespace=ns, resource="seeded"),
    ),
    "/coordd.v1.ClaimService/ListClaims": (
        "read",
        lambda ns: claim.ListClaimsRequest(namespace=ns),
    ),
    "/coordd.v1.IdempotencyService/BeginIdempotency": (
        "write",
        lambda ns: idem.BeginIdempotencyRequest(namespace=ns, key="k1", fingerprint=b"f"),
    ),
    "/coordd.v1.IdempotencyService/CompleteIdempotency": (
        "write",
        lambda ns: idem.CompleteIdempotencyRequest(namespace=ns, key="k1", attempt=1, result=b"r"),
    ),
    "/coordd.v1.IdempotencyService/FailIdempotency": (
        "write",
        lambda ns: idem.FailIdempotencyRequest(namespace=ns, key="k1", attempt=1, retryable=True),
    ),
    "/coordd.v1.IdempotencyService/GetIdempotency": (
        "read",
        lambda ns: idem.GetIdempotencyRequest(namespace=ns, key="seeded"),
    ),
    "/coordd.v1.MemoryService/PutMemory": (
        "write",
        lambda ns: mem.PutMemoryRequest(
            namespace=ns, key="m1", tier=mem.MEMORY_TIER_SEMANTIC, value_json='{"v": 1}'
        ),
    ),
    "/coordd.v1.MemoryService/PutMemories": (
        "write",
        lambda ns: mem.PutMemoriesRequest(
            entries=[
                mem.PutMemoryRequest(
                    namespace=ns, key="m2", tier=mem.MEMORY_TIER_SEMANTIC, value_json="2"
                )
            ]
        ),
    ),
    "/coordd.v1.MemoryService/GetMemory": (
        "read",
        lambda ns: mem.GetMemoryRequest(namespace=ns, key="seeded"),
    ),
    "/coordd.v1.MemoryService/DeleteMemory": (
        "write",
        lambda ns: mem.DeleteMemoryRequest(namespace=ns, key="absent"),
    ),
    # Listing a prefix needs read on its whole subtree (a grant ending in "**").
    "/coordd.v1.MemoryService/ListMemory": (
        "read/**",
        lambda ns: mem.ListMemoryRequest(namespace_prefix=ns),
    ),
    "/coordd.v1.MemoryService/MemoryHistory": (
        "read",
        lambda ns: mem.MemoryHistoryRequest(namespace=ns, key="seeded"),
    ),
    "/coordd.v1.MemoryService/StartTask": (
        "write",
        lambda ns: mem.StartTaskRequest(namespace=ns, task_id="t1"),
    ),
    "/coordd.v1.MemoryService/EndTask": (
        "write",
        lambda ns: mem.EndTaskRequest(namespace=ns, task_id="t1"),
    ),
    "/coordd.v1.MemoryService/CompactEpisodes": (
        "write",
        lambda ns: mem.CompactEpisodesRequest(
            namespace=ns, keys=["ep"], summary_key="sum", summary_json="{}"
        ),
    ),
    "/coordd.v1.MemoryService/SetNamespacePolicy": (
        "admin",
        lambda ns: mem.SetNamespacePolicyRequest(
            namespace=ns, policy=mem.NamespacePolicy(episodic_max_count=10)
        ),
    ),
    # Search needs no grant on its prefixes: its results are filtered (tested below).
    "/coordd.v1.MemoryService/SearchMemory": (
        "",
        lambda ns: mem.SearchMemoryRequest(embedding=[1.0, 0.5, 0.0], k=3, namespace_prefixes=[ns]),
    ),
    "/coordd.v1.MemoryService/GetNamespacePolicy": (
        "read",
        lambda ns: mem.GetNamespacePolicyRequest(namespace=ns),
    ),
    "/coordd.v1.ContextService/PostContext": (
        "write",
        lambda ns: ctx.PostContextRequest(
            namespace=ns, to_role="reader", context_type="note", content_json="{}"
        ),
    ),
    "/coordd.v1.ContextService/ReadContext": (
        "read",
        lambda ns: ctx.ReadContextRequest(namespace=ns),
    ),
    "/coordd.v1.ContextService/AckContext": (
        "read",
        lambda ns: ctx.AckContextRequest(namespace=ns, ids=[1]),
    ),
    "/coordd.v1.AgreementService/ProposeAgreement": (
        "write",
        lambda ns: agr.ProposeAgreementRequest(
            namespace=ns,
            id="a1",
            participants=[agr.Participant(role="writer")],
            deadline=SECONDS,
        ),
    ),
    "/coordd.v1.AgreementService/Vote": (
        "write",
        lambda ns: agr.VoteRequest(namespace=ns, id="seeded", accept=True),
    ),
    "/coordd.v1.AgreementService/GetAgreement": (
        "read",
        lambda ns: agr.GetAgreementRequest(namespace=ns, id="seeded"),
    ),
    "/coordd.v1.AgreementService/AwaitAgreement": (
        "read",
        lambda ns: agr.AwaitAgreementRequest(namespace=ns, id="seeded"),
    ),
    "/coordd.v1.AgreementService/ListAgreements": (
        "read",
        lambda ns: agr.ListAgreementsRequest(namespace=ns),
    ),
    "/coordd.v1.GateService/CheckGate": (
        "read",
        lambda ns: gate.CheckGateRequest(read={"revisions": {ns: 0}}),
    ),
    "/coordd.v1.AdminService/ForceReleaseClaim": (
        "admin",
        lambda ns: admin.ForceReleaseClaimRequest(namespace=ns, resource="seeded"),
    ),
    "/coordd.v1.AdminService/PurgeNamespace": (
        "admin",
        lambda ns: admin.PurgeNamespaceRequest(namespace=ns, reason="matrix"),
    ),
    # Streams: the first answer (or the refusal) is all a cell needs.
    "/coordd.v1.WatchService/Watch": (
        "read",
        lambda ns: watch.WatchRequest(namespace=ns, start_revision=1),
    ),
    "/coordd.v1.ContextService/SubscribeContext": (
        "read",
        lambda ns: ctx.SubscribeContextRequest(namespace=ns),
    ),
    # The session stream carries unary requests; each is authorized like its unary call.
    "/coordd.v1.SessionService/Session": (
        "write",
        lambda ns: session.SessionRequest(
            id=1,
            method="/coordd.v1.MemoryService/PutMemory",
            payload=RPCS["/coordd.v1.MemoryService/PutMemory"][1](ns).SerializeToString(),
        ),
    ),
}
# Writes last within a namespace and purge at the very end, so reads find the seeded data.
ORDER = sorted(RPCS, key=lambda p: ("Purge" in p, RPCS[p][0] != "read", p))


def _all_methods() -> set[str]:
    found = set()
    for info in pkgutil.iter_modules(coordd.v1.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"coordd.v1.{info.name}")
            for svc in module.DESCRIPTOR.services_by_name.values():
                found.update(f"/{svc.full_name}/{m.name}" for m in svc.methods)
    return found


def _allowed(grants: dict[str, tuple[str, ...]], op: str, ns: str) -> bool:
    if not op:
        return True
    if op == "read/**":
        return any(p.endswith("**") and pattern_matches(p, ns) for p in grants.get("read", ()))
    return any(pattern_matches(p, ns) for p in grants.get(op, ()))


def test_every_rpc_has_a_row() -> None:
    assert set(RPCS) == _all_methods()


def _policy(tmp: Path) -> Path:
    text = ""
    for role, (agent, token, _) in [*ROLES.items(), ("seeder", (*SEEDER, {}))]:
        digest = hashlib.sha256(token.encode()).hexdigest()
        text += f'[[agents]]\nid = "{agent}"\nrole = "{role}"\ntoken_sha256 = "{digest}"\n'
    for role, (_, _, grants) in ROLES.items():
        for op, namespaces in grants.items():
            text += (
                f'[[grants]]\nrole = "{role}"\nnamespaces = {list(namespaces)!r}\n'
                f'operations = ["{op}"]\n'
            ).replace("'", '"')
    text += '[[grants]]\nrole = "seeder"\nnamespaces = ["mx/**"]\n'
    text += 'operations = ["read", "write", "claim"]\n'
    return write_policy(tmp, text)


def _fingerprint(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[object, ...]:
    """Every namespace's revision and every coordd table's row count."""
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'coordd' ORDER BY 1"
        ).fetchall()
        if r[0] not in ("interest", "clock", "schema_migrations")
    ]
    counts = conn.execute(
        "SELECT " + ", ".join(f"(SELECT count(*) FROM coordd.{t})" for t in tables)
    ).fetchone()
    revisions = conn.execute("SELECT name, revision FROM coordd.namespaces ORDER BY 1").fetchall()
    return (tuple(zip(tables, counts or (), strict=True)), tuple(revisions))


def _call(channel: grpc.Channel, path: str, request: Message, token: str) -> grpc.StatusCode:
    md = (("authorization", f"Bearer {token}"),)
    body = request.SerializeToString()
    try:
        if path.endswith("/Session"):
            bidi = channel.stream_stream(path)
            answers = list(bidi(iter([body]), metadata=md, timeout=10))
            return (
                grpc.StatusCode.OK
                if not answers
                else _CODES[session.SessionResponse.FromString(answers[0]).code]
            )
        if path.endswith(("/Watch", "/SubscribeContext")):
            stream = channel.unary_stream(path)(body, metadata=md, timeout=0.5)
            next(iter(stream), None)
            stream.cancel()
            return grpc.StatusCode.OK
        channel.unary_unary(path)(body, metadata=md, timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as err:
        code: grpc.StatusCode = err.code()  # type: ignore[attr-defined]
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and path.endswith(
            ("/Watch", "/SubscribeContext")
        ):
            return grpc.StatusCode.OK  # authorized and waiting for events
        return code


_CODES = {c.value[0]: c for c in grpc.StatusCode}


@pytest.fixture
def matrix_daemon(start_daemon, tmp_path: Path):
    return start_daemon(auth="token", policy_file=_policy(tmp_path))


async def _seed(address: str) -> None:
    seeder = await AsyncClient.connect(address, agent_id=SEEDER[0], token=SEEDER[1])
    try:
        for ns in NAMESPACES:
            await seeder.claims.acquire(ns, "seeded", ttl=3600)
            await seeder.memory.put(ns, "seeded", {"ns": ns}, embedding=_vector(ns))
            await seeder.idempotency.begin(ns, "seeded", b"fp")
            await seeder.context.post(ns, {"x": 1}, to_role="reader", context_type="note")
            await seeder.agreements.propose(
                ns, "seeded", participants=[Participant(role="writer")], deadline=3600
            )
    finally:
        await seeder.close()


def _vector(ns: str) -> list[float]:
    return {"mx/a": [1.0, 0.0, 0.0], "mx/b": [0.0, 1.0, 0.0], "mx/c": [0.0, 0.0, 1.0]}[ns]


async def test_the_matrix(matrix_daemon, pg_dsn: str) -> None:
    await _seed(matrix_daemon.address)
    outcomes: Counter[str] = Counter()
    wrong: list[str] = []
    with (
        grpc.insecure_channel(matrix_daemon.address) as channel,
        psycopg.connect(pg_dsn, autocommit=True) as conn,
    ):
        for ns in NAMESPACES:
            for path in ORDER:
                op, build = RPCS[path]
                for role, (_, token, grants) in ROLES.items():
                    allowed = _allowed(grants, op, ns)
                    before = None if allowed else _fingerprint(conn)
                    code = _call(channel, path, build(ns), token)
                    cell = f"{role} {path} {ns}: {code.name}"
                    if allowed:
                        outcomes[
                            "allowed " + ("ok" if code == grpc.StatusCode.OK else "refused")
                        ] += 1
                        if code in (
                            grpc.StatusCode.PERMISSION_DENIED,
                            grpc.StatusCode.UNAUTHENTICATED,
                            grpc.StatusCode.INTERNAL,
                            grpc.StatusCode.UNKNOWN,
                        ):
                            wrong.append("allowed but " + cell)
                    else:
                        outcomes["denied"] += 1
                        if code != grpc.StatusCode.PERMISSION_DENIED:
                            wrong.append("should be denied: " + cell)
                        elif _fingerprint(conn) != before:
                            wrong.append("denied but wrote: " + cell)
    assert wrong == [], "\n".join(wrong)
    cells = len(NAMESPACES) * len(RPCS) * len(ROLES)
    assert sum(outcomes.values()) == cells
    print(f"matrix: {cells} cells:", dict(outcomes))
    assert outcomes["denied"] >= cells // 2 and outcomes["allowed ok"] >= 40, outcomes


async def test_search_never_returns_what_the_caller_cannot_read(matrix_daemon) -> None:
    await _seed(matrix_daemon.address)
    writer = await AsyncClient.connect(matrix_daemon.address, agent_id="writer-1", token="tok-w")
    reader = await AsyncClient.connect(matrix_daemon.address, agent_id="reader-1", token="tok-r")
    try:
        # The index catches up with other agents' writes asynchronously; reading the seeded
        # entries puts their revisions in the reader's session, so its search waits for the
        # index to reflect them (and the index never moves back for the writer's search).
        for ns in ("mx/a", "mx/b"):
            assert await reader.memory.get(ns, "seeded") is not None
        hits = await reader.memory.search(_vector("mx/c"), 3, "mx")
        assert {h.entry.namespace for h in hits} == {"mx/a", "mx/b"}
        # The nearest entry to mx/b's vector is mx/b's: the writer may read only mx/a, and gets
        # mx/a's entry as its one hit instead of losing the place to an invisible one.
        hits = await writer.memory.search(_vector("mx/b"), 1, "mx")
        assert [h.entry.namespace for h in hits] == ["mx/a"]
    finally:
        await writer.close()
        await reader.close()


async def test_forbidden_streams_are_refused_before_any_event(matrix_daemon) -> None:
    await _seed(matrix_daemon.address)  # mx/c has history and an unread entry for readers
    writer = await AsyncClient.connect(matrix_daemon.address, agent_id="writer-1", token="tok-w")
    reader = await AsyncClient.connect(matrix_daemon.address, agent_id="reader-1", token="tok-r")
    try:
        seen = []
        with pytest.raises(PermissionDeniedError):
            async for event in writer.watch("mx/c", start_revision=1, reconnect_for=0):
                seen.append(event)
        with pytest.raises(PermissionDeniedError):
            async for entry in reader.context.subscribe("mx/c"):
                seen.append(entry)
        with pytest.raises(PermissionDeniedError):  # a prefix watch needs the whole subtree
            async for event in writer.watch("mx", prefix=True, start_revision=1, reconnect_for=0):
                seen.append(event)
        assert seen == []
    finally:
        await writer.close()
        await reader.close()
