"""The per-call request path's shortcuts keep their answers: identity from metadata, durations,
responses filled in place, and the method table the daemon serves its services from."""

from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from coordd.domain.access import OPEN_POLICY
from coordd.domain.models import Identity
from coordd.errors import InvalidArgumentError, UnauthenticatedError
from coordd.server import convert
from coordd.server.interceptors import Authenticator
from coordd.server.method_table import MethodTable
from coordd.v1 import claim_service_pb2 as pb
from coordd.v1 import claim_service_pb2_grpc as pb_grpc
from coordd.vocabulary import Claim


def test_dev_identity_reads_the_last_text_value_of_each_key() -> None:
    auth = Authenticator("dev", OPEN_POLICY)
    metadata = (
        ("coordd-agent-id", "first"),
        ("user-agent", "grpc-python"),
        ("coordd-agent-id", "planner-1"),
        ("coordd-agent-role", "planner"),
        ("coordd-agent-role", b"not text"),
    )
    assert auth.identify(metadata) == Identity(agent_id="planner-1", role="planner")
    # Remembered per (agent, role), still checked per call when unknown or wrong.
    assert auth.identify(metadata) is auth.identify(metadata)
    with pytest.raises(UnauthenticatedError, match="missing 'coordd-agent-id'"):
        auth.identify((("coordd-agent-role", "planner"),))
    with pytest.raises(UnauthenticatedError, match="coordd-agent-id"):
        auth.identify((("coordd-agent-id", "bad id with spaces"),))


def test_durations_converted_once_still_reject_invalid_values() -> None:
    ttl = Duration(seconds=30, nanos=500_000_000)
    assert convert.duration(ttl, True, "ttl") == timedelta(seconds=30.5)
    assert convert.duration(ttl, True, "ttl") == timedelta(seconds=30.5)
    assert convert.duration(ttl, False, "ttl") is None
    with pytest.raises(InvalidArgumentError):
        convert.duration(Duration(seconds=30, nanos=-1), True, "ttl")
    with pytest.raises(InvalidArgumentError):  # asked twice: never remembered as valid
        convert.duration(Duration(seconds=30, nanos=-1), True, "ttl")


def test_claim_filled_in_place_equals_the_built_message() -> None:
    now = datetime(2026, 12, 2, 5, 0, 0, 123456, tzinfo=UTC)
    claim = Claim(
        namespace="acme",
        resource="r1",
        holder_agent_id="a1",
        holder_role="planner",
        fencing_token=7,
        acquire_time=now,
        expire_time=now + timedelta(seconds=30),
        progress="half",
    )
    response = pb.AcquireClaimResponse(acquired=True)
    convert.fill_claim(response.claim, claim)
    assert response.claim == convert.claim_message(claim)
    empty = pb.AcquireClaimResponse(acquired=False)
    convert.fill_claim(empty.claim, None)
    assert not empty.HasField("claim")


def test_method_table_serves_what_generated_code_adds() -> None:
    table = MethodTable()
    pb_grpc.add_ClaimServiceServicer_to_server(pb_grpc.ClaimServiceServicer(), table)  # type: ignore[arg-type]

    class Details(grpc.HandlerCallDetails):
        def __init__(self, method: str) -> None:
            self.method = method
            self.invocation_metadata = ()

    acquire = table.service(Details("/coordd.v1.ClaimService/AcquireClaim"))
    assert acquire is table.methods["/coordd.v1.ClaimService/AcquireClaim"]
    assert acquire is not None and acquire.unary_unary is not None
    assert len([m for m in table.methods if m.startswith("/coordd.v1.ClaimService/")]) == len(
        pb.DESCRIPTOR.services_by_name["ClaimService"].methods
    )
    assert table.service(Details("/coordd.v1.ClaimService/NoSuchMethod")) is None

    class Fallback(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
            return acquire if details.method == "/other.Service/Method" else None

    table.add_generic_rpc_handlers([Fallback()])
    assert table.service(Details("/other.Service/Method")) is acquire
