"""Admin actions: force-release and purge need the admin grant, and leave a change-log and an
audit trail; token_file= reads the bearer token from a file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from coordd_client import (
    AsyncClient,
    Client,
    FencingTokenStaleError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from tests.fix_daemon import write_policy

TOKENS = {"ops-1": ("ops", "tok-ops"), "worker-1": ("worker", "tok-w1")}


def _policy(tmp: Path) -> Path:
    agents = "".join(
        f'[[agents]]\nid = "{agent}"\nrole = "{role}"\n'
        f'token_sha256 = "{hashlib.sha256(tok.encode()).hexdigest()}"\n'
        for agent, (role, tok) in TOKENS.items()
    )
    return write_policy(
        tmp,
        agents + '[[grants]]\nrole = "worker"\nnamespaces = ["acme/**"]\n'
        'operations = ["read", "write", "claim"]\n'
        '[[grants]]\nrole = "ops"\nnamespaces = ["acme/**"]\n'
        'operations = ["read", "admin"]\n',
    )


@pytest.fixture
def token_daemon(start_daemon, tmp_path: Path):
    return start_daemon(auth="token", policy_file=_policy(tmp_path), audit_log=tmp_path / "a.log")


async def _connect(d, agent: str) -> AsyncClient:
    return await AsyncClient.connect(d.address, agent_id=agent, token=TOKENS[agent][1])


async def test_force_release_frees_the_claim_and_stales_the_old_token(
    token_daemon, tmp_path: Path, pg_conn
) -> None:
    worker, ops = await _connect(token_daemon, "worker-1"), await _connect(token_daemon, "ops-1")
    try:
        held = await worker.claims.acquire("acme/jobs", "job-1", ttl=3600)
        assert held.acquired and held.claim is not None
        with pytest.raises(PermissionDeniedError):  # a worker has no admin grant
            await worker.admin.force_release("acme/jobs", "job-1")
        out = await ops.admin.force_release("acme/jobs", "job-1", reason="holder crashed")
        assert out.released and out.claim is not None
        assert out.claim.holder_agent_id == "worker-1"
        assert out.revision == held.revision + 1
        assert (await worker.claims.get("acme/jobs", "job-1")) is None
        with pytest.raises(FencingTokenStaleError):
            await worker.memory.put(
                "acme/jobs", "k", {"v": 1}, tier="semantic", fence=held.claim.fence
            )
        again = await ops.admin.force_release("acme/jobs", "job-1")
        assert not again.released and again.claim is None and again.revision == out.revision
    finally:
        await worker.close()
        await ops.close()
    cur = await pg_conn.execute(
        "SELECT kind, key, op, agent_id, data->>'reason', data->>'holder_agent_id'"
        " FROM coordd.changes WHERE namespace = 'acme/jobs' AND op = 'force_release'"
    )
    assert await cur.fetchall() == [
        ("claim", "job-1", "force_release", "ops-1", "holder crashed", "worker-1")
    ]
    events = [json.loads(line) for line in (tmp_path / "a.log").read_text().splitlines()]
    admin = [e for e in events if e["event"] == "admin"]
    assert [(e["action"], e["agent_id"], e["role"], e["namespace"]) for e in admin] == [
        ("force_release", "ops-1", "ops", "acme/jobs")
    ]
    assert admin[0]["rpc"] == "/coordd.v1.AdminService/ForceReleaseClaim"
    denied = [e for e in events if e["event"] == "denied"]
    assert [(e["agent_id"], e["operation"], e["namespace"]) for e in denied] == [
        ("worker-1", "admin", "acme/jobs")
    ]


async def test_purge_empties_one_namespace_and_spares_its_neighbours(
    token_daemon, tmp_path: Path, pg_conn
) -> None:
    worker, ops = await _connect(token_daemon, "worker-1"), await _connect(token_daemon, "ops-1")
    try:
        for ns in ("acme/a", "acme/a/child", "acme/b"):
            await worker.claims.acquire(ns, "r", ttl=60)
            await worker.memory.put(ns, "k", {"v": 1}, tier="semantic", embedding=[1.0, 0.5])
            await worker.context.post(ns, {"x": 1}, to_role="worker", context_type="note")
            await worker.idempotency.begin(ns, "key", b"fp")
        before = await worker.memory.search([1.0, 0.5], 10, "acme")
        assert {h.entry.namespace for h in before} == {"acme/a", "acme/a/child", "acme/b"}
        with pytest.raises(PermissionDeniedError):
            await worker.admin.purge_namespace("acme/a")
        out = await ops.admin.purge_namespace("acme/a", reason="tenant left")
        assert out.removed["claims"] == out.removed["memory"] == out.removed["context"] == 1
        assert out.removed["idempotency"] == 1
        after = await ops.memory.search([1.0, 0.5], 10, "acme")  # ops saw the purge
        assert {h.entry.namespace for h in after} == {"acme/a/child", "acme/b"}
        assert await worker.memory.get("acme/a", "k") is None
        assert await worker.memory.get("acme/b", "k") is not None
    finally:
        await worker.close()
        await ops.close()
    for table in ("claims", "memory", "context_entries", "idempotency"):
        cur = await pg_conn.execute(
            f"SELECT namespace, count(*) FROM coordd.{table} GROUP BY 1 ORDER BY 1"
        )
        assert await cur.fetchall() == [("acme/a/child", 1), ("acme/b", 1)], table
    cur = await pg_conn.execute(
        "SELECT kind, op, agent_id FROM coordd.changes"
        " WHERE namespace = 'acme/a' AND revision = %s ORDER BY seq",
        (out.revision,),
    )
    assert await cur.fetchall() == [
        ("namespace", "purge", "ops-1"),
        ("memory", "purge", "ops-1"),
        ("claim", "purge", "ops-1"),
    ]
    events = [json.loads(line) for line in (tmp_path / "a.log").read_text().splitlines()]
    assert [(e["action"], e["reason"]) for e in events if e["event"] == "admin"] == [
        ("purge", "tenant left")
    ]


def test_token_file_is_read_and_never_shown(token_daemon, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("tok-ops\n")
    with Client.connect(token_daemon.address, agent_id="ops-1", token_file=secret) as client:
        assert client.admin.force_release("acme/x", "nothing").released is False
    secret.write_text("tok-wrong")
    with (
        Client.connect(token_daemon.address, agent_id="ops-1", token_file=str(secret)) as client,
        pytest.raises(UnauthenticatedError) as err,
    ):
        client.claims.get("acme/x", "r")
    assert "tok-wrong" not in str(err.value)
    audit = (tmp_path / "a.log").read_text()
    assert "tok-wrong" not in audit and '"event":"unauthenticated"' in audit
    with pytest.raises(ValueError, match="not both"):
        Client.connect(token_daemon.address, agent_id="a", token="t", token_file=secret)
    with pytest.raises(ValueError, match="cannot read token_file"):
        Client.connect(token_daemon.address, agent_id="a", token_file=tmp_path / "missing")
