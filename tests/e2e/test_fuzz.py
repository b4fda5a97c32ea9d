"""Bad input never becomes INTERNAL, never leaks internals, never takes the daemon down.

Hypothesis builds requests for every RPC from the message descriptors: strings from the whole
of Unicode (control characters, huge ones), integers over the full int64 range, durations and
timestamps with out-of-range seconds and nanos, repeated fields of any length. Every answer
must be OK or a deliberate coordd error with ErrorInfo, and the daemon must still serve.
"""

from __future__ import annotations

import contextlib

import grpc
from google.protobuf import descriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coordd import rpc_status
from coordd.v1 import claim_service_pb2, idempotency_service_pb2

FD = descriptor.FieldDescriptor
# Half the examples are plausible throughout (so calls reach storage and its refusals), half
# are hostile throughout.
PLAUSIBLE = {
    "int64": st.integers(min_value=1, max_value=60),
    "int32": st.integers(min_value=0, max_value=60),
    "text": st.sampled_from(["acme/docs", "acme", "r1", "r2", "k1"]),
}
HOSTILE = {
    "int64": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "int32": st.integers(min_value=-(2**31), max_value=2**31 - 1),
    "text": st.one_of(
        st.text(max_size=20),
        st.sampled_from(["a/b/c/d/e/f/g/h/i", "x" * 300, "\x00", "ü/ß", "a//b", ""]),
    ),
}
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.PERMISSION_DENIED,
}


def message_strategy(
    desc: descriptor.Descriptor, hostile: bool, depth: int = 0
) -> st.SearchStrategy[Message]:
    cls = _classes[desc.full_name]
    pick = HOSTILE if hostile else PLAUSIBLE
    fields: dict[str, st.SearchStrategy[object]] = {}
    for f in desc.fields:
        if f.type == FD.TYPE_MESSAGE:
            if depth > 2:
                continue
            value: st.SearchStrategy[object] = message_strategy(f.message_type, hostile, depth + 1)
        elif f.type == FD.TYPE_STRING:
            value = pick["text"]
        elif f.type == FD.TYPE_BYTES:
            value = st.binary(max_size=80)
        elif f.type == FD.TYPE_BOOL:
            value = st.booleans()
        elif f.type in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
            value = pick["int64"]
        elif f.type == FD.TYPE_ENUM:
            value = st.integers(-3, 8) if hostile else st.integers(0, 4)
        elif f.type in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
            value = pick["int32"]
        elif f.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
            value = st.floats(allow_nan=True, allow_infinity=True, width=32)
        else:
            continue
        if f.is_repeated:
            value = st.lists(value, min_size=0 if hostile else 1, max_size=5)
        fields[f.name] = st.one_of(st.none(), value) if hostile else value

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        for name, strategy in fields.items():
            v = draw(strategy)
            if v is None:
                continue
            target = getattr(msg, name) if hasattr(msg, name) else None
            if isinstance(v, list):
                if v and isinstance(v[0], Message):
                    for item in v:
                        target.add().CopyFrom(item)  # type: ignore[union-attr]
                else:
                    target.extend(v)  # type: ignore[union-attr]
            elif isinstance(v, Message):
                getattr(msg, name).CopyFrom(v)
            else:
                # e.g. an enum value protobuf refuses on the client side
                with contextlib.suppress(ValueError, TypeError):
                    setattr(msg, name, v)
        return msg

    return build()


_classes: dict[str, type[Message]] = {}


def _register(module: object) -> None:
    from google.protobuf import duration_pb2, message_factory, timestamp_pb2

    from coordd.v1 import common_pb2

    for msg in module.DESCRIPTOR.message_types_by_name.values():  # type: ignore[attr-defined]
        _classes[msg.full_name] = message_factory.GetMessageClass(msg)
    _classes["google.protobuf.Duration"] = duration_pb2.Duration
    _classes["google.protobuf.Timestamp"] = timestamp_pb2.Timestamp
    _classes["coordd.v1.Fence"] = common_pb2.Fence


for _m in (claim_service_pb2, idempotency_service_pb2):
    _register(_m)

METHODS = [
    (svc.full_name, m.name, m.input_type)
    for mod in (claim_service_pb2, idempotency_service_pb2)
    for svc in mod.DESCRIPTOR.services_by_name.values()
    for m in svc.methods
]


SEEN: dict[grpc.StatusCode, int] = {}


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, Message]:
    service, method, input_type = draw(st.sampled_from(METHODS))
    hostile = draw(st.booleans())
    return f"/{service}/{method}", draw(message_strategy(input_type, hostile))


@settings(
    max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
@given(call=calls())
def test_random_requests_get_deliberate_answers(daemon, call: tuple[str, Message]) -> None:
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
            err = rpc_status.from_rpc_error(exc)
            # A fuzzed min_revision above the namespace's revision is refused deliberately.
            deliberate = code in ALLOWED or err.reason == "REVISION_NOT_REACHED"
            assert deliberate, f"{path} answered {code}: {exc.details()}"  # type: ignore[attr-defined]
            assert err.reason != "INTERNAL"
            details = exc.details() or ""  # type: ignore[attr-defined]
            assert "Traceback" not in details and "psycopg" not in details
        assert (
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(), timeout=5)
            .status
            == health_pb2.HealthCheckResponse.SERVING
        )


def test_fuzzing_reached_past_validation() -> None:
    """The run above must not have been all INVALID_ARGUMENT: it reached the storage paths."""
    assert SEEN.get(grpc.StatusCode.INVALID_ARGUMENT, 0) > 0
    past = sum(n for code, n in SEEN.items() if code != grpc.StatusCode.INVALID_ARGUMENT)
    assert past >= 60, SEEN
