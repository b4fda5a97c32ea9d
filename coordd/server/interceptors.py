"""The one place requests are authenticated and errors are translated to google.rpc.Status.

Servicers hold no try/except: a ``CoorddError`` raised anywhere below becomes its status code
with ErrorInfo and typed details; anything else becomes INTERNAL with a trace id only (the
exception goes to the log, never to the wire). Cancellation passes through untouched.
"""

from __future__ import annotations

import contextvars
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from coordd import audit, rpc_status, telemetry
from coordd.domain.access import Policy
from coordd.domain.limits import Limiter
from coordd.domain.models import Identity
from coordd.domain.validation import agent_id_problem
from coordd.errors import (
    CoorddError,
    InternalError,
    InvalidArgumentError,
    MessageTooLargeError,
    UnauthenticatedError,
)

logger = logging.getLogger(__name__)

AGENT_ID_KEY = "coordd-agent-id"
AGENT_ROLE_KEY = "coordd-agent-role"
AUTHORIZATION_KEY = "authorization"

_identity: contextvars.ContextVar[Identity] = contextvars.ContextVar("coordd_identity")

_DEV_IDENTITIES_KEPT = 4096

# Services that answer without credentials (probes, tooling).
_OPEN_PREFIXES = ("/grpc.health.v1.", "/grpc.reflection.")


def current_identity() -> Identity:
    """The authenticated caller of the RPC being served."""
    return _identity.get()


class Authenticator:
    """Maps request metadata to an Identity, by mode ("dev" or "token")."""

    def __init__(self, mode: str, policy: Policy) -> None:
        self.mode = mode
        self.policy = policy
        # dev mode: identities already checked, by (agent id, role); every call of an agent
        # names the same pair, so it is checked once (bounded: cleared when full).
        self._dev_identities: dict[tuple[str, str], Identity] = {}

    def identify(
        self,
        metadata: tuple[tuple[str, str | bytes], ...],
        auth_context: Mapping[str, Iterable[bytes]] | None = None,
    ) -> Identity:
        if self.mode == "mtls":
            return self._from_certificate(auth_context or {})
        # The three keys that matter, in one pass (the last value of a repeated key wins);
        # every call goes through here, and a dict of all the metadata cost a microsecond.
        agent_id = role = auth = ""
        for key, value in metadata:
            if key == AGENT_ID_KEY:
                agent_id = value if isinstance(value, str) else agent_id
            elif key == AGENT_ROLE_KEY:
                role = value if isinstance(value, str) else role
            elif key == AUTHORIZATION_KEY:
                auth = value if isinstance(value, str) else auth
        if self.mode == "token":
            scheme, _, token = auth.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise UnauthenticatedError("missing bearer token in 'authorization' metadata")
            who = self.policy.identity_for_token(token.strip())
            if who is None:
                raise UnauthenticatedError("unknown bearer token")
            if agent_id and agent_id != who.agent_id:
                # Silently acting as the token's agent would hide a misconfigured client (or
                # one trying to be someone else): say which identity the token carries.
                raise UnauthenticatedError(
                    f"the bearer token belongs to agent {who.agent_id!r}, but the request names "
                    f"agent {agent_id!r} in '{AGENT_ID_KEY}': connect with the token's agent id"
                )
            return who
        if (known := self._dev_identities.get((agent_id, role))) is not None:
            return known
        if not agent_id:
            raise UnauthenticatedError(f"missing '{AGENT_ID_KEY}' metadata (dev mode)")
        for key, value in ((AGENT_ID_KEY, agent_id), (AGENT_ROLE_KEY, role)):
            if value and (problem := agent_id_problem(value)):
                raise UnauthenticatedError(f"metadata '{key}' {problem}")
        if len(self._dev_identities) >= _DEV_IDENTITIES_KEPT:
            self._dev_identities.clear()
        who = self._dev_identities[agent_id, role] = Identity(agent_id=agent_id, role=role)
        return who

    def _from_certificate(self, auth_context: Mapping[str, Iterable[bytes]]) -> Identity:
        """mtls: the agent id is the client certificate's SPIFFE ID (its URI SAN
        ``spiffe://trust-domain/ns/NS/sa/NAME``) when it has one, else its common name; the
        role comes from the policy's [[agents]] entry of that id (no entry: no role)."""
        sans = [v.decode() for v in auth_context.get("x509_subject_alternative_name") or ()]
        spiffe = [v for v in sans if v.startswith("spiffe://")]
        if len(spiffe) > 1:  # the SPIFFE spec allows one; two would make identity ambiguous
            raise UnauthenticatedError("client certificate carries more than one SPIFFE ID")
        if spiffe:
            agent_id, source = spiffe[0], "certificate SPIFFE ID"
        else:
            names = list(auth_context.get("x509_common_name") or ())
            if not names:
                raise UnauthenticatedError("client certificate has neither SPIFFE ID nor CN")
            agent_id, source = names[0].decode(), "certificate common name"
        if problem := agent_id_problem(agent_id):
            raise UnauthenticatedError(f"{source} {problem}")
        return Identity(agent_id=agent_id, role=self.policy.role_of(agent_id))


def _trace_id() -> str:
    """The trace id an INTERNAL error reports: the span's, or a fresh one if untraced."""
    return telemetry.current_trace_id() or uuid.uuid4().hex


async def _abort(context: grpc.aio.ServicerContext[Any, Any], err: CoorddError) -> None:
    status = rpc_status.to_status(err)
    await context.abort(
        err.code,
        err.message,
        trailing_metadata=((rpc_status.STATUS_DETAILS_KEY, status.SerializeToString()),),
    )


def _internal(method: str, exc: BaseException) -> InternalError:
    trace_id = _trace_id()
    logger.error("internal error in %s (trace_id=%s)", method, trace_id, exc_info=exc)
    return InternalError(f"internal error; trace_id={trace_id}", trace_id)


class Undecodable:
    """Stands for a request body that did not decode, until the caller is authenticated."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


class Oversized:
    """Stands for a request body over the message limit, until the caller is authenticated."""

    __slots__ = ("limit", "size")

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit


def _tolerant(
    deserializer: Callable[[bytes], Any] | None, limit: int
) -> Callable[[bytes], Any] | None:
    """Wrap a request deserializer so a body that does not decode (truncated, invalid UTF-8 in a
    string field, wrong wire types) or is over *limit* bytes reaches coordd's handler instead
    of making gRPC answer UNKNOWN or a bare RESOURCE_EXHAUSTED before any coordd code runs."""
    if deserializer is None:
        return None

    def decode(body: bytes) -> Any:
        if len(body) > limit:
            return Oversized(len(body), limit)
        try:
            return deserializer(body)
        except (DecodeError, ValueError, TypeError) as exc:
            return Undecodable(type(exc).__name__)

    return decode


def _decoded(request: Any) -> Any:
    """The request, or INVALID_ARGUMENT if its body did not decode."""
    if isinstance(request, Oversized):
        raise MessageTooLargeError(request.size, request.limit)
    if isinstance(request, Undecodable):
        raise InvalidArgumentError.single(
            "(request body)",
            "is not a valid protobuf encoding of the request message (truncated, wrong wire "
            "types, or invalid UTF-8 in a string field)",
        )
    return request


if TYPE_CHECKING:  # the stubs make it generic; the runtime class is not subscriptable
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor


class CoorddServerInterceptor(_ServerInterceptor):
    """Authenticate, then run the handler with errors translated."""

    def __init__(self, authenticator: Authenticator, max_message_bytes: int = 4 << 20) -> None:
        self._auth = authenticator
        self._max_message_bytes = max_message_bytes
        policy = authenticator.policy
        self.limiter = Limiter(lambda: policy.limits)
        """Per-agent call rate and open-stream cap (the policy's [[limits]])."""

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        decode = _tolerant(handler.request_deserializer, self._max_message_bytes)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self.wrap_unary(method, handler.unary_unary),
                request_deserializer=decode,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream),
                request_deserializer=decode,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                self._wrap_bidi(method, handler.stream_stream),
                request_deserializer=decode,
                response_serializer=handler.response_serializer,
            )
        return handler

    def _authenticate(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> Identity:
        audit.serving(method)
        try:
            # The certificate's properties only when they name the caller (mtls): reading
            # them builds a dict per call.
            auth = self._auth
            who = auth.identify(
                tuple(context.invocation_metadata() or ()),
                context.auth_context() if auth.mode == "mtls" else None,
            )
        except UnauthenticatedError as err:
            audit.record(audit.UNAUTHENTICATED, None, problem=err.message)
            raise
        _identity.set(who)
        self.limiter.admit(who)
        return who

    async def _fail(
        self, method: str, context: grpc.aio.ServicerContext[Any, Any], exc: Exception
    ) -> None:
        """Abort the call with *exc* as its status (INTERNAL, logged, for non-coordd errors)."""
        if isinstance(exc, grpc.aio.AbortError):
            raise exc
        await _abort(context, exc if isinstance(exc, CoorddError) else _internal(method, exc))

    # Plain try/except rather than a shared async context manager: this runs on every call,
    # and an asynccontextmanager costs a generator, two awaits and a frame per call.
    def wrap_unary(self, method: str, behavior: Any) -> Any:
        """*behavior* authenticated and with errors translated: what serves unary *method*
        (the session stream dispatches its requests through this too)."""

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            try:
                self._authenticate(method, context)
                return await behavior(_decoded(request), context)
            except Exception as exc:
                await self._fail(method, context, exc)

        return unary

    def _wrap_stream(self, method: str, behavior: Any) -> Any:
        async def stream(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            try:
                who = self._authenticate(method, context)
                self.limiter.open_stream(who)
                try:
                    async for item in behavior(_decoded(request), context):
                        yield item
                finally:  # also when the client hangs up: the stream no longer counts
                    self.limiter.close_stream(who)
            except Exception as exc:
                await self._fail(method, context, exc)

        return stream

    def _wrap_bidi(self, method: str, behavior: Any) -> Any:
        """A bidirectional stream (the session stream) with errors translated; it authenticates
        each request it carries itself. A message that does not decode ends the stream with
        INVALID_ARGUMENT, since its request id cannot be known."""

        async def bidi(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            audit.serving(method)
            try:
                async for item in behavior(_each_decoded(requests), context):
                    yield item
            except Exception as exc:
                await self._fail(method, context, exc)

        return bidi


async def _each_decoded(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _decoded(request)
