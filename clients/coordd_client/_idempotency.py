"""Idempotency keys: begin/complete/fail, and ``once()`` that runs work once per key."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from coordd.errors import IdempotencyInFlightError
from coordd.v1 import idempotency_service_pb2 as pb
from coordd.v1 import idempotency_service_pb2_grpc as pb_grpc

from . import _convert as cv
from ._blocking import Face, blocking, call_in_caller
from ._core import Service
from ._errors import IdempotentTaskFailedError
from ._models import BeginResult, Fence, IdempotencyRecord, IdempotencyState


def fingerprint(payload: Any) -> bytes:
    """SHA-256 of the payload's canonical JSON: equal payloads give equal fingerprints."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).digest()


def encode_result(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def decode_result(data: bytes) -> Any:
    return json.loads(data) if data else None


@dataclass(frozen=True, slots=True)
class _Step:
    """What ``once()`` does after a Begin: return, raise, wait, or run attempt N."""

    kind: str
    value: Any = None


def next_step(namespace: str, key: str, begun: BeginResult, deadline: float) -> _Step:
    if begun.state is IdempotencyState.COMPLETED:
        return _Step("return", decode_result(begun.result))
    if begun.state is IdempotencyState.FAILED:
        return _Step("raise", IdempotentTaskFailedError(namespace, key, begun.error))
    if begun.state is IdempotencyState.IN_PROGRESS:
        delay = max(begun.retry_after.total_seconds(), 0.02)
        if time.monotonic() + delay > deadline:
            return _Step(
                "raise",
                IdempotencyInFlightError(namespace, key, begun.retry_after, begun.attempt),
            )
        return _Step("wait", delay)
    return _Step("run", begun.attempt)


class AsyncIdempotency(Service):
    """``client.idempotency``: Stripe-style keys over gRPC."""

    stub_class = pb_grpc.IdempotencyServiceStub
    _stub: pb_grpc.IdempotencyServiceAsyncStub

    async def begin(
        self,
        namespace: str,
        key: str,
        fingerprint: bytes = b"",
        *,
        lease: timedelta | float | None = None,
        retention: timedelta | float | None = None,
    ) -> BeginResult:
        """Start work under *key*; see ``BeginResult.state`` for what to do next."""
        resp = await self._core.call(
            self._stub.BeginIdempotency,
            pb.BeginIdempotencyRequest(
                namespace=namespace,
                key=key,
                fingerprint=fingerprint,
                lease=cv.duration(lease),
                retention=cv.duration(retention),
            ),
        )
        # An unset retry_after reads as zero, not None (BeginResult.retry_after is a timedelta).
        return cv.result(BeginResult, resp, retry_after=resp.retry_after.ToTimedelta())

    async def complete(
        self, namespace: str, key: str, attempt: int, result: bytes, *, fence: Fence | None = None
    ) -> IdempotencyRecord:
        """Store the result of *attempt*; refused if the attempt was superseded or fenced off."""
        resp = await self._core.call(
            self._stub.CompleteIdempotency,
            pb.CompleteIdempotencyRequest(
                namespace=namespace,
                key=key,
                attempt=attempt,
                result=result,
                fence=cv.fence(fence),
            ),
        )
        return cv.idempotency_record(resp.record)

    async def fail(
        self,
        namespace: str,
        key: str,
        attempt: int,
        *,
        retryable: bool,
        error: str = "",
        fence: Fence | None = None,
    ) -> IdempotencyRecord:
        """Give up *attempt*: retryable frees the key, otherwise the failure is stored."""
        resp = await self._core.call(
            self._stub.FailIdempotency,
            pb.FailIdempotencyRequest(
                namespace=namespace,
                key=key,
                attempt=attempt,
                retryable=retryable,
                error=error[:4096],
                fence=cv.fence(fence),
            ),
        )
        return cv.idempotency_record(resp.record)

    async def get(self, namespace: str, key: str) -> IdempotencyRecord | None:
        resp = await self._core.call(
            self._stub.GetIdempotency, pb.GetIdempotencyRequest(namespace=namespace, key=key)
        )
        return cv.idempotency_record(resp.record) if resp.found else None

    async def once(
        self,
        namespace: str,
        key: str,
        payload: Any,
        work: Callable[[], Any] | Callable[[], Awaitable[Any]],
        *,
        lease: timedelta | float = timedelta(seconds=60),
        retention: timedelta | float | None = None,
        fence: Fence | None = None,
        max_wait: timedelta | float = timedelta(minutes=5),
    ) -> Any:
        """Run *work* once for *key* and return its (JSON) result; retries get the stored
        result without running it again.

        *payload* identifies the request: reusing *key* with another payload raises
        IdempotencyKeyReusedError. If another runner holds the key, waits for it (up to
        *max_wait*) and returns its result. If *work* raises, the key is released so a retry can
        run it, and the exception propagates. *lease* must cover the work: past it, another
        runner may take over and this attempt's completion is refused. With *fence*, the
        completion is refused (FenceStaleError) if the claim was lost while *work* ran; then the
        next runner runs *work* again, so guard an external effect that must not repeat with
        ``client.gate()`` right before it. The blocking client runs *work* in the calling
        thread.
        """
        fp = fingerprint(payload)
        deadline = time.monotonic() + cv.seconds(max_wait)
        while True:
            begun = await self.begin(namespace, key, fp, lease=lease, retention=retention)
            step = next_step(namespace, key, begun, deadline)
            if step.kind == "return":
                return step.value
            if step.kind == "raise":
                raise step.value
            if step.kind == "wait":
                await asyncio.sleep(step.value)
                continue
            try:
                value = await call_in_caller(work)
            except BaseException as exc:
                await asyncio.shield(
                    self.fail(namespace, key, begun.attempt, retryable=True, error=repr(exc))
                )
                raise
            await self.complete(namespace, key, begun.attempt, encode_result(value), fence=fence)
            return value


class Idempotency(Face[AsyncIdempotency]):
    """Blocking ``client.idempotency``; see ``AsyncIdempotency`` (``once`` runs the work in
    the calling thread)."""

    begin = blocking(AsyncIdempotency.begin)
    complete = blocking(AsyncIdempotency.complete)
    fail = blocking(AsyncIdempotency.fail)
    get = blocking(AsyncIdempotency.get)
    once = blocking(AsyncIdempotency.once)
