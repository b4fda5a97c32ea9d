"""Random AgreementService requests get deliberate answers (see test_fuzz.py for the method)."""

from __future__ import annotations

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordd import rpc_status
from coordd.v1 import agreement_service_pb2
from tests.e2e.test_fuzz import ALLOWED, _register, message_strategy

_register(agreement_service_pb2)
METHODS = [
    (svc.full_name, m.name, m.input_type)
    for svc in agreement_service_pb2.DESCRIPTOR.services_by_name.values()
    for m in svc.methods
]
# A proposal reusing an id with other fields is refused with ALREADY_EXISTS, deliberately.
AGREEMENT_ALLOWED = ALLOWED | {grpc.StatusCode.ALREADY_EXISTS}
SEEN: dict[grpc.StatusCode, int] = {}


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, Message]:
    service, method, input_type = draw(st.sampled_from(METHODS))
    hostile = draw(st.booleans())
    request = draw(message_strategy(input_type, hostile))
    if method == "AwaitAgreement":
        request.ClearField("wait")  # answer at once: the fuzzer is not here to wait
    return f"/{service}/{method}", request


@settings(
    max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
@given(call=calls())
def test_random_agreement_requests_get_deliberate_answers(
    daemon, call: tuple[str, Message]
) -> None:
    path, request = call
    with grpc.insecure_channel(daemon.address) as channel:
        rpc = channel.unary_unary(
            path, request_serializer=lambda m: m.SerializeToString(), response_deserializer=bytes
        )
        try:
            rpc(request, metadata=(("coordd-agent-id", "fuzzer"),), timeout=10)
            SEEN[grpc.StatusCode.OK] = SEEN.get(grpc.StatusCode.OK, 0) + 1
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            SEEN[code] = SEEN.get(code, 0) + 1
            assert code in AGREEMENT_ALLOWED, f"{path} answered {code}: {exc.details()}"  # type: ignore[attr-defined]
            assert rpc_status.from_rpc_error(exc).reason != "INTERNAL"
            details = exc.details() or ""  # type: ignore[attr-defined]
            assert "Traceback" not in details and "psycopg" not in details
        assert (
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(), timeout=5)
            .status
            == health_pb2.HealthCheckResponse.SERVING
        )


def test_agreement_fuzzing_reached_past_validation() -> None:
    past = sum(n for code, n in SEEN.items() if code != grpc.StatusCode.INVALID_ARGUMENT)
    assert SEEN.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > 0 and past >= 30, SEEN
