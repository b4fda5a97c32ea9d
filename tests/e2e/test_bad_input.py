"""Inputs that used to answer INTERNAL or UNKNOWN now get INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import grpc
import pytest

from coordd import rpc_status
from coordd.v1 import memory_service_pb2 as pb
from coordd_client import InvalidArgumentError, NamespacePolicy


async def test_namespace_policy_reads_back_after_it_is_set(aclient) -> None:
    await aclient.memory.set_policy(
        "acme/p", NamespacePolicy(default_mode="cas", forbid_unconditional=True)
    )
    policy = await aclient.memory.get_policy("acme/p")
    assert policy.default_mode == "cas" and policy.forbid_unconditional


async def test_nul_characters_in_text_are_refused_by_field(aclient, pg_conn) -> None:
    await aclient.memory.start_task("acme/t", "t1")
    with pytest.raises(InvalidArgumentError) as err:
        await aclient.memory.end_task("acme/t", "t1", summary_text="done\x00")
    assert [v.field for v in err.value.violations] == ["summary_text"]
    assert "NUL" in err.value.violations[0].description
    with pytest.raises(InvalidArgumentError) as err:
        await aclient.memory.put("acme/t", "k", {"v": 1}, text="a\x00b")
    assert [v.field for v in err.value.violations] == ["text"]
    cur = await pg_conn.execute("SELECT count(*) FROM coordd.memory")
    assert await cur.fetchone() == (0,)


def _raw(daemon, method: str, body: bytes) -> grpc.RpcError:
    with grpc.insecure_channel(daemon.address) as channel:
        rpc = channel.unary_unary(f"/coordd.v1.MemoryService/{method}")
        with pytest.raises(grpc.RpcError) as err:
            rpc(body, metadata=(("coordd-agent-id", "a"),), timeout=10)
    return err.value


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (pb.GetMemoryRequest(namespace="acme", key="k", as_of={"nanos": -5}), "as_of"),
        (pb.GetMemoryRequest(namespace="acme", key="k", as_of={"seconds": 2**62}), "as_of"),
        # A string field holding invalid UTF-8, and a truncated body: they never decode.
        (b"\n\x02\xc3\x28", "(request body)"),
        (pb.GetMemoryRequest(namespace="acme", key="k").SerializeToString()[:-2], "(request body)"),
    ],
)
def test_undecodable_or_out_of_range_requests_are_invalid_argument(daemon, body, field) -> None:
    raw = body if isinstance(body, bytes) else body.SerializeToString()
    err = _raw(daemon, "GetMemory", raw)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    decoded = rpc_status.from_rpc_error(err)
    assert isinstance(decoded, InvalidArgumentError)
    assert [v.field for v in decoded.violations] == [field]
