"""Bad input never becomes INTERNAL or UNKNOWN, never takes the daemon down, never half-writes.

Hypothesis builds requests for every RPC of every coordd service from the message descriptors:
plausible values (so calls reach storage and its refusals) and hostile ones (the whole of
Unicode with NUL and control characters, strings past every limit, integers over the full int64
range, NaN and infinite vectors, negative and out-of-range durations and timestamps, unknown
enum numbers, repeated fields of any length). A third of the requests are then damaged at the
byte level: truncated, a string field holding invalid UTF-8, a field sent with the wrong wire
type, random bytes. Requests go out as raw bytes, 50 at a time on one channel, so 5,000 of them
take seconds.

Every answer must be OK or a deliberate coordd error carrying ErrorInfo (an undecodable body is
INVALID_ARGUMENT), the daemon must still answer health checks, and afterwards no namespace that
no successful request named holds any row or revision: failed requests wrote nothing.
"""

from __future__ import annotations

import importlib
import math
import pkgutil
import threading
import warnings
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import descriptor
from google.protobuf.message import Message
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisDeprecationWarning

import coordd.v1
from coordd import rpc_status
from coordd.v1 import session_service_pb2

FD = descriptor.FieldDescriptor
BATCH = 25
BATCHES = 100  # per part: 2 parts of 2,500 requests, 5,000 in all
STREAM_WAIT_S = 0.3  # a stream that passed its checks is waiting for events: that is OK
UNARY_TIMEOUT_S = 5.0

NAMESPACES = ["fz/a", "fz/b", "fz/b/c", "fz/d", "fz/e/f/g"]
# Namespaces only hostile requests use: valid, so a request naming one may well succeed, and
# then it is recorded as touched; the rest must stay empty.
SPARE = [f"fz/spare-{i}" for i in range(20)]


def _services() -> list[tuple[str, descriptor.MethodDescriptor]]:
    found = []
    for info in pkgutil.iter_modules(coordd.v1.__path__):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(f"coordd.v1.{info.name}")
            for svc in module.DESCRIPTOR.services_by_name.values():
                found.extend((f"/{svc.full_name}/{m.name}", m) for m in svc.methods)
    return sorted(found, key=lambda x: x[0])


METHODS = _services()
STREAMING = {path for path, m in METHODS if m.server_streaming and not m.client_streaming}
# The session stream (tagged requests for the unary RPCs on one stream): fuzzed with session
# requests that carry generated requests of the unary RPCs; each answer's in-band status is
# held to the same rules as a unary call's.
SESSION = {path for path, m in METHODS if m.client_streaming}
UNARY = [(path, m) for path, m in METHODS if not m.server_streaming and not m.client_streaming]
UNARY_PATHS = {path for path, _ in UNARY}


def _plausible_text(name: str) -> st.SearchStrategy[str]:
    if "namespace" in name:
        return st.sampled_from(NAMESPACES)
    if name.endswith("_json"):
        return st.sampled_from(['{"v": 1}', "[1, 2]", '"x"', "{}"])
    if "role" in name:
        return st.sampled_from(["worker", "reviewer"])
    if "agent" in name:
        return st.sampled_from(["fuzzer", "other-agent"])
    if "type" in name:
        return st.sampled_from(["note", "review"])
    return st.sampled_from(["r1", "r2", "k1", "task-1", "id-1"])


HOSTILE_TEXT = st.one_of(
    st.text(max_size=24),
    st.sampled_from(SPARE),
    st.sampled_from(
        [
            "",
            "\x00",
            "a\x00b",
            "a/b/c/d/e/f/g/h/i",
            "a//b",
            "ü/ß",
            "../../etc",
            "x" * 300,
            "y" * 70_000,  # past the 64 KiB text limit
            '{"v": NaN}',
            '{"a": "\\u0000"}',
            "[" * 5_000,
        ]
    ),
)
INT64 = st.one_of(
    st.sampled_from([0, -1, 1, 2**63 - 1, -(2**63)]),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
)
FLOATS = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 3.4e38]),
    st.floats(width=32, allow_nan=True, allow_infinity=True),
)


def _scalar(f: FD, hostile: bool) -> st.SearchStrategy[Any] | None:
    t = f.type
    if t == FD.TYPE_STRING:
        return HOSTILE_TEXT if hostile else _plausible_text(f.name)
    if t == FD.TYPE_BYTES:
        return st.binary(max_size=64) if hostile else st.sampled_from([b"fp-1", b"result"])
    if t == FD.TYPE_BOOL:
        return st.booleans()
    if t in (FD.TYPE_INT64, FD.TYPE_SINT64, FD.TYPE_SFIXED64):
        return INT64 if hostile else st.integers(min_value=0, max_value=40)
    if t in (FD.TYPE_UINT64, FD.TYPE_FIXED64):
        return st.integers(min_value=0, max_value=2**64 - 1) if hostile else st.integers(0, 40)
    if t in (FD.TYPE_INT32, FD.TYPE_SINT32, FD.TYPE_SFIXED32):
        return st.integers(-(2**31), 2**31 - 1) if hostile else st.integers(0, 40)
    if t in (FD.TYPE_UINT32, FD.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1) if hostile else st.integers(0, 40)
    if t == FD.TYPE_ENUM:
        top = max(v.number for v in f.enum_type.values)
        return st.integers(-3, top + 3) if hostile else st.integers(0, top)
    if t in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        if hostile:
            return FLOATS
        return st.floats(min_value=0.25, max_value=1.0, width=32)
    return None


def _well_known(desc: descriptor.Descriptor, hostile: bool) -> st.SearchStrategy[Message] | None:
    from google.protobuf import duration_pb2, timestamp_pb2

    if desc.full_name == "google.protobuf.Duration":
        if hostile:
            return st.builds(
                duration_pb2.Duration,
                seconds=st.one_of(
                    st.integers(-(2**63), 2**63 - 1), st.sampled_from([-1, -3600, 10**12])
                ),
                nanos=st.integers(-(2**31), 2**31 - 1),
            )
        return st.builds(duration_pb2.Duration, seconds=st.integers(1, 60))
    if desc.full_name == "google.protobuf.Timestamp":
        if hostile:
            return st.builds(
                timestamp_pb2.Timestamp,
                seconds=st.integers(-(2**63), 2**63 - 1),
                nanos=st.integers(-(2**31), 2**31 - 1),
            )
        return st.builds(timestamp_pb2.Timestamp, seconds=st.integers(1_700_000_000, 1_900_000_000))
    return None


def message_strategy(
    desc: descriptor.Descriptor, hostile: bool, depth: int = 0
) -> st.SearchStrategy[Message]:
    """A strategy for messages of *desc*, every field drawn by its type (and name)."""
    special = _well_known(desc, hostile)
    if special is not None:
        return special
    cls = _message_class(desc)
    fields: dict[str, tuple[FD, st.SearchStrategy[Any]]] = {}
    for f in desc.fields:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            key_f, value_f = (
                f.message_type.fields_by_name["key"],
                f.message_type.fields_by_name["value"],
            )
            k, v = _scalar(key_f, hostile), _scalar(value_f, hostile)
            if k is None or v is None:
                continue
            fields[f.name] = (f, st.dictionaries(k, v, max_size=4))
            continue
        if f.type == FD.TYPE_MESSAGE:
            if depth > 2:
                continue
            value: st.SearchStrategy[Any] = message_strategy(f.message_type, hostile, depth + 1)
        else:
            scalar = _scalar(f, hostile)
            if scalar is None:
                continue
            value = scalar
        if f.is_repeated:
            size = 40 if hostile and f.type != FD.TYPE_MESSAGE else 4
            value = st.lists(value, min_size=0 if hostile else 1, max_size=size)
        fields[f.name] = (f, st.one_of(st.none(), value) if hostile else value)

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        for name, (f, strategy) in fields.items():
            v = draw(strategy)
            if v is None:
                continue
            target = getattr(msg, name)
            try:
                if isinstance(v, dict):
                    target.update(v)
                elif isinstance(v, list):
                    if f.type == FD.TYPE_MESSAGE:
                        for item in v:
                            target.add().CopyFrom(item)
                    else:
                        target.extend(v)
                elif isinstance(v, Message):
                    target.CopyFrom(v)
                else:
                    setattr(msg, name, v)
            except (ValueError, TypeError):
                pass  # a value protobuf refuses on the client side (e.g. an unknown closed enum)
        return msg

    return build()


def _message_class(desc: descriptor.Descriptor) -> type[Message]:
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(desc)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@st.composite
def damage(draw: st.DrawFn, body: bytes, desc: descriptor.Descriptor) -> bytes:
    """Damage a serialized request at the byte level."""
    strings = [f for f in desc.fields if f.type == FD.TYPE_STRING]
    kinds = ["truncate", "random", "wrong_wire_type", "flip"] + (["bad_utf8"] if strings else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "truncate" and len(body) > 1:
        return body[: draw(st.integers(1, len(body) - 1))]
    if kind == "bad_utf8":
        f = draw(st.sampled_from(strings))
        junk = draw(st.sampled_from([b"\xc3\x28", b"\xff\xfe", b"\xed\xa0\x80", b"ok\x80"]))
        return body + _tag(f.number, 2) + _varint(len(junk)) + junk
    if kind == "wrong_wire_type" and desc.fields:
        f = draw(st.sampled_from(list(desc.fields)))
        if f.type in (FD.TYPE_STRING, FD.TYPE_BYTES, FD.TYPE_MESSAGE) or f.is_repeated:
            return body + _tag(f.number, 0) + _varint(7)  # a varint where bytes belong
        return body + _tag(f.number, 2) + _varint(3) + b"abc"  # bytes where a varint belongs
    if kind == "flip" and body:
        at = draw(st.integers(0, len(body) - 1))
        return body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1 :]
    return draw(st.binary(min_size=1, max_size=64))


@dataclass(frozen=True)
class Call:
    path: str
    body: bytes
    damaged: bool
    texts: frozenset[str] = field(default_factory=frozenset)


def _texts(msg: Message) -> set[str]:
    """Every string value in a request (the namespaces it could have written)."""
    out: set[str] = set()
    for f, value in msg.ListFields():
        values = value if f.is_repeated else [value]
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            out.update(k for k in value if isinstance(k, str))
            continue
        for item in values:
            if isinstance(item, str):
                out.add(item)
            elif isinstance(item, Message):
                out |= _texts(item)
    return out


@st.composite
def calls(draw: st.DrawFn) -> Call:
    path, method = draw(st.sampled_from(METHODS))
    if path in SESSION:
        inner = draw(unary_calls())
        body = session_service_pb2.SessionRequest(
            id=draw(st.integers(0, 2**64 - 1)),
            method=inner.path,
            payload=inner.body,
            timeout={"seconds": 5},
        ).SerializeToString()
        if draw(st.integers(0, 5)) == 0:
            return Call(path, draw(damage(body, method.input_type)), True)
        return Call(path, body, inner.damaged, inner.texts)
    return draw(_one_call(path, method))


@st.composite
def unary_calls(draw: st.DrawFn) -> Call:
    path, method = draw(st.sampled_from(UNARY))
    return draw(_one_call(path, method))


@st.composite
def _one_call(draw: st.DrawFn, path: str, method: descriptor.MethodDescriptor) -> Call:
    hostile = draw(st.booleans())
    msg = draw(REQUESTS[path, hostile])
    body = msg.SerializeToString()
    if draw(st.integers(0, 2)) == 0:
        damaged = draw(damage(body, method.input_type))
        try:  # damage may leave a decodable request, which may then write
            texts = _texts(_message_class(method.input_type).FromString(damaged))
        except Exception:
            texts = set()
        return Call(path, damaged, True, frozenset(texts))
    return Call(path, body, False, frozenset(_texts(msg)))


# Built once: building strategies per draw costs more than drawing from them.
REQUESTS = {
    (path, hostile): message_strategy(method.input_type, hostile)
    for path, method in METHODS
    for hostile in (False, True)
    if path not in SESSION
}

_CODES = {c.value[0]: c for c in grpc.StatusCode}


def _names_unserved_method(body: bytes) -> bool:
    """Whether a (damaged) session request names a method that is not a unary RPC."""
    method = session_service_pb2.SessionRequest.FromString(body).method
    return bool(method) and method not in UNARY_PATHS


ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    # A blocking call (AcquireClaim with wait, an agreement wait) outliving the caller's deadline.
    grpc.StatusCode.DEADLINE_EXCEEDED,
    # Only as REVISION_NOT_REACHED: a read asked for a revision this daemon has not reached.
    grpc.StatusCode.UNAVAILABLE,
}
METADATA = (("coordd-agent-id", "fuzzer"), ("coordd-agent-role", "worker"))


def _identity(b: bytes) -> bytes:
    return b


@dataclass
class Run:
    """Requests in flight and what came back. Up to ``window`` calls are in flight at once and a
    new one goes out as soon as any finishes, so a call that blocks (a read waiting for a
    revision, an acquire with wait) overlaps with the rest instead of holding them up."""

    channel: grpc.Channel
    window: int = 200
    sent: Counter[str] = field(default_factory=Counter)
    seen: Counter[grpc.StatusCode] = field(default_factory=Counter)
    touched: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    _done: list[tuple[Call, Any]] = field(default_factory=list)
    _slots: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(200))
    _all_done: threading.Condition = field(default_factory=threading.Condition)
    _pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(8))

    def send(self, call: Call) -> None:
        """Send *call* once fewer than ``window`` calls are in flight."""
        self._slots.acquire()
        self.sent[call.path] += 1
        if call.path in SESSION:
            handle: Any = self._pool.submit(self._session, call)
        elif call.path in STREAMING:
            stream = self.channel.unary_stream(call.path, _identity, _identity)
            handle = stream(call.body, metadata=METADATA, timeout=STREAM_WAIT_S)
        else:
            unary = self.channel.unary_unary(call.path, _identity, _identity)
            handle = unary.future(call.body, metadata=METADATA, timeout=UNARY_TIMEOUT_S)
        handle.add_done_callback(lambda h, c=call: self._finished(c, h))

    def _session(self, call: Call) -> list[bytes]:
        bidi = self.channel.stream_stream(call.path, _identity, _identity)
        return list(bidi(iter([call.body]), metadata=METADATA, timeout=UNARY_TIMEOUT_S))

    def _finished(self, call: Call, handle: Any) -> None:
        with self._all_done:
            self._done.append((call, handle))
            self._all_done.notify_all()
        self._slots.release()

    def drain(self) -> None:
        """Wait for every answer, then check them all."""
        total = sum(self.sent.values())
        with self._all_done:
            assert self._all_done.wait_for(lambda: len(self._done) == total, timeout=60)
        for call, handle in self._done:
            self._settle(call, handle)

    def _settle(self, call: Call, handle: Any) -> None:
        if call.path in SESSION:
            self._settle_session(call, handle)
            return
        code = handle.code()
        if call.path in STREAMING and code == grpc.StatusCode.DEADLINE_EXCEEDED:
            code = grpc.StatusCode.OK  # the stream passed its checks and was waiting
        if code != grpc.StatusCode.OK:
            self._refused(call, code, handle)
            return
        self.seen[grpc.StatusCode.OK] += 1
        self.touched.update(call.texts)

    def _settle_session(self, call: Call, done: Future[list[bytes]]) -> None:
        try:
            answers = [session_service_pb2.SessionResponse.FromString(b) for b in done.result()]
        except grpc.RpcError as err:  # the stream itself failed (an undecodable message)
            self._refused(call, err.code(), err)  # type: ignore[attr-defined]
            return
        for answer in answers:
            code = _CODES[answer.code]
            self.seen[code] += 1
            if code == grpc.StatusCode.OK:
                self.touched.update(call.texts)
                continue
            if code == grpc.StatusCode.UNIMPLEMENTED and _names_unserved_method(call.body):
                continue  # damage renamed the method: unknown methods are UNIMPLEMENTED, as unary
            where = f"{call.path} (in-band) answered {code.name}: {answer.message[:200]}"
            if code not in ALLOWED:
                self.problems.append(where)
            elif code != grpc.StatusCode.DEADLINE_EXCEEDED and rpc_status.from_status(
                status_pb2.Status.FromString(answer.status_details)
            ).reason in ("", "INTERNAL"):
                self.problems.append("no ErrorInfo: " + where)

    def _refused(self, call: Call, code: grpc.StatusCode, err: grpc.RpcError) -> None:
        self.seen[code] += 1
        details = err.details() or ""  # type: ignore[attr-defined]
        where = f"{call.path} body={call.body[:120].hex()} answered {code.name}: {details[:200]}"
        if code not in ALLOWED or (
            code == grpc.StatusCode.UNAVAILABLE
            and rpc_status.from_rpc_error(err).reason != "REVISION_NOT_REACHED"
        ):
            self.problems.append(where)
        elif "Traceback" in details or "psycopg" in details:
            self.problems.append("leaked internals: " + where)
        elif code not in (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ) and rpc_status.from_rpc_error(err).reason in ("", "INTERNAL"):
            self.problems.append("no ErrorInfo: " + where)


def _generate(part: int) -> list[list[Call]]:
    """Hypothesis draws every batch first: nothing else runs in the process while it draws."""
    batches: list[list[Call]] = []

    @settings(
        max_examples=BATCHES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=False,  # reproducible through @seed: each part draws its own requests
        database=None,
    )
    @seed(part)
    @given(batch=st.lists(calls(), min_size=BATCH, max_size=BATCH))
    def collect(batch: list[Call]) -> None:
        batches.append(batch)

    with warnings.catch_warnings():
        # The daemon's threads (pool maintenance, gRPC) use `random` while Hypothesis draws;
        # Hypothesis would take that for a strategy using it.
        warnings.simplefilter("ignore", HypothesisDeprecationWarning)
        collect()
    return batches


def _fuzz(run: Run, part: int) -> None:
    health = health_pb2_grpc.HealthStub(run.channel)
    for batch in _generate(part):
        for call in batch:
            run.send(call)
        status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    run.drain()


_NAMESPACE_TABLES = (
    "claims",
    "idempotency",
    "memory",
    "memory_history",
    "tasks",
    "context_entries",
    "context_any",
    "context_takers",
    "agreements",
    "changes",
)


@pytest.mark.parametrize("part", [1, 2])
def test_random_requests_get_deliberate_answers(daemon, pg_dsn: str, part: int) -> None:
    with grpc.insecure_channel(
        daemon.address, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        run = Run(channel)
        _fuzz(run, part)
    assert run.problems == [], "\n".join(sorted(run.problems))
    seen = run.seen
    assert sum(seen.values()) >= BATCH * BATCHES, seen
    assert set(run.sent) == {path for path, _ in METHODS}, "every RPC of every service was sent"
    # The run reached past validation into storage and its refusals.
    past = sum(n for code, n in seen.items() if code != grpc.StatusCode.INVALID_ARGUMENT)
    assert seen[grpc.StatusCode.OK] >= 250 and past >= 500, seen
    print(f"fuzz: {sum(seen.values())} requests over {len(run.sent)} RPCs:", dict(seen))
    # No partial writes: a namespace that no successful request named holds nothing at all.
    untouched = [ns for ns in SPARE if ns not in run.touched]
    assert untouched, "some spare namespaces were only ever named by failed requests"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        for table in _NAMESPACE_TABLES:
            rows = conn.execute(
                f"SELECT DISTINCT namespace FROM coordd.{table} WHERE namespace = ANY(%s)",
                (untouched,),
            ).fetchall()
            assert rows == [], f"{table} holds rows of namespaces only failed requests named"
        revs = conn.execute(
            "SELECT name, revision FROM coordd.namespaces WHERE name = ANY(%s) AND revision > 0",
            (untouched,),
        ).fetchall()
        assert revs == []
        # Every committed revision has its change-log row: writes and their log are atomic.
        gaps = conn.execute(
            "SELECT n.name, n.revision, count(DISTINCT c.revision) FROM coordd.namespaces n"
            " LEFT JOIN coordd.changes c ON c.namespace = n.name"
            " GROUP BY n.name, n.revision HAVING count(DISTINCT c.revision) <> n.revision"
        ).fetchall()
        assert gaps == [], gaps
