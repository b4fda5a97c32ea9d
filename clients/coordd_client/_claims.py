"""Claims: acquire, renew, release, read, and ``hold()`` with background renewal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator
from datetime import timedelta

from coordd.errors import ClaimNotHeldError, CoorddError
from coordd.v1 import claim_service_pb2 as pb
from coordd.v1 import claim_service_pb2_grpc as pb_grpc

from . import _convert as cv
from ._blocking import Face, blocking, blocking_context
from ._core import Service
from ._errors import ClaimHeldError, ClaimLostError
from ._models import AcquireAllResult, AcquireResult, Claim, ClaimList, Fence

logger = logging.getLogger("coordd_client")


def _acquire_result(resp: pb.AcquireClaimResponse | pb.AcquireAnyClaimResponse) -> AcquireResult:
    return cv.result(AcquireResult, resp)


class AsyncClaims(Service):
    """``client.claims``: leases on resources with fencing tokens."""

    stub_class = pb_grpc.ClaimServiceStub
    _stub: pb_grpc.ClaimServiceAsyncStub

    async def acquire(
        self,
        namespace: str,
        resource: str,
        ttl: timedelta | float,
        *,
        wait: timedelta | float | None = None,
        progress: str = "",
    ) -> AcquireResult:
        """Try to claim *resource*; with *wait*, block up to that long (first come first served).

        Returns an ``AcquireResult``: ``acquired`` False carries the current holder's claim.
        """
        timeout = self._core.timeout + (
            timedelta(seconds=cv.seconds(wait)) if wait else timedelta()
        )
        resp = await self._core.call(
            self._stub.AcquireClaim,
            pb.AcquireClaimRequest(
                namespace=namespace,
                resource=resource,
                ttl=cv.duration(ttl),
                wait=cv.duration(wait),
                progress=progress,
            ),
            timeout,
        )
        return _acquire_result(resp)

    async def acquire_any(
        self, namespace: str, resources: list[str], ttl: timedelta | float, *, progress: str = ""
    ) -> AcquireResult:
        """Claim the first free resource of *resources*, in order, in one round trip."""
        resp = await self._core.call(
            self._stub.AcquireAnyClaim,
            pb.AcquireAnyClaimRequest(
                namespace=namespace, resources=resources, ttl=cv.duration(ttl), progress=progress
            ),
        )
        return _acquire_result(resp)

    async def acquire_all(
        self, namespace: str, resources: list[str], ttl: timedelta | float, *, progress: str = ""
    ) -> AcquireAllResult:
        """Claim every resource of *resources*, or none, in one transaction.

        No other agent ever sees part of the set claimed by you. Refused (``acquired`` False)
        if another agent holds any of them; ``claims`` then lists those holders' claims.
        """
        resp = await self._core.call(
            self._stub.AcquireClaims,
            pb.AcquireClaimsRequest(
                namespace=namespace, resources=resources, ttl=cv.duration(ttl), progress=progress
            ),
        )
        return cv.result(AcquireAllResult, resp)

    async def renew(
        self,
        namespace: str,
        resource: str,
        fencing_token: int,
        ttl: timedelta | float,
        *,
        progress: str | None = None,
    ) -> Claim:
        """Extend your claim's lease (and record progress). Raises ClaimNotHeldError if lost."""
        resp = await self._core.call(
            self._stub.RenewClaim,
            pb.RenewClaimRequest(
                namespace=namespace,
                resource=resource,
                fencing_token=fencing_token,
                ttl=cv.duration(ttl),
                progress=progress,
            ),
        )
        return cv.claim(resp.claim)

    async def release(self, namespace: str, resource: str, fencing_token: int) -> int:
        """Release your claim; returns the revision. Raises ClaimNotHeldError if not yours."""
        resp = await self._core.call(
            self._stub.ReleaseClaim,
            pb.ReleaseClaimRequest(
                namespace=namespace, resource=resource, fencing_token=fencing_token
            ),
        )
        return resp.header.revision

    async def get(self, namespace: str, resource: str) -> Claim | None:
        """The live claim on *resource*, or None."""
        resp = await self._core.call(
            self._stub.GetClaim, pb.GetClaimRequest(namespace=namespace, resource=resource)
        )
        return cv.claim(resp.claim) if resp.found else None

    async def list(
        self, namespace: str, *, holder_agent_id: str = "", page_size: int = 0, page_token: str = ""
    ) -> ClaimList:
        """One page of live claims in *namespace*, ordered by resource."""
        resp = await self._core.call(
            self._stub.ListClaims,
            pb.ListClaimsRequest(
                namespace=namespace,
                holder_agent_id=holder_agent_id,
                page_size=page_size,
                page_token=page_token,
            ),
        )
        return cv.result(ClaimList, resp)

    @contextlib.asynccontextmanager
    async def hold(
        self,
        namespace: str,
        resource: str,
        ttl: timedelta | float,
        *,
        wait: timedelta | float | None = None,
        progress: str = "",
    ) -> AsyncIterator[HeldClaim]:
        """Hold a claim for the duration of a ``with`` block, renewing it in the background.

        Raises ClaimHeldError if the claim cannot be had (after *wait*, if given). Inside the
        block, ``held.fence`` goes on writes made under the claim, and ``held.lost`` turns True
        (``held.lost_event`` is set) if the lease is lost; the claim is released on exit.
        """
        res = await self.acquire(namespace, resource, ttl, wait=wait, progress=progress)
        if not res.acquired or res.claim is None:
            raise ClaimHeldError(namespace, resource, res.claim)
        held = HeldClaim(self, res.claim, cv.seconds(ttl))
        held._start()
        try:
            yield held
        finally:
            await held._finish()


class HeldClaim:
    """A claim held by ``hold()``: its token, its fence, and whether it is still yours."""

    def __init__(self, claims: AsyncClaims, claim: Claim, ttl_s: float) -> None:
        self.claim = claim
        self._claims = claims
        self._ttl_s = ttl_s
        self._valid_until = time.monotonic() + ttl_s
        self._lost_why = ""
        self.lost_event = threading.Event()
        """Set (from any thread) when the claim is lost."""
        self._task: asyncio.Task[None] | None = None

    @property
    def fencing_token(self) -> int:
        return self.claim.fencing_token

    @property
    def fence(self) -> Fence:
        """Attach to writes made under this claim: coordd rejects them once it is lost."""
        return self.claim.fence

    @property
    def lost(self) -> bool:
        return self.lost_event.is_set()

    def check(self) -> None:
        """Raise ClaimLostError if the claim is no longer held."""
        if self.lost:
            raise ClaimLostError(self.claim.namespace, self.claim.resource, self._lost_why)

    async def renew(self, *, progress: str | None = None) -> None:
        """Renew now, optionally recording progress (a semantic heartbeat)."""
        self.check()
        await self._renew_once(progress)

    async def _renew_once(self, progress: str | None) -> None:
        c = self.claim
        try:
            started = time.monotonic()
            self.claim = await self._claims.renew(
                c.namespace, c.resource, c.fencing_token, self._ttl_s, progress=progress
            )
            self._valid_until = started + self._ttl_s
        except ClaimNotHeldError as exc:
            self._mark_lost(
                f"held by {exc.holder_agent_id!r}" if exc.holder_agent_id else "lease expired"
            )
            raise

    def _mark_lost(self, why: str) -> None:
        if not self.lost:
            self._lost_why = why
            logger.warning("claim %s/%s lost: %s", self.claim.namespace, self.claim.resource, why)
            self.lost_event.set()

    def _start(self) -> None:
        self._task = asyncio.create_task(self._renew_loop(), name=f"renew {self.claim.resource}")

    async def _renew_loop(self) -> None:
        interval = max(self._ttl_s / 3, 0.05)
        while not self.lost:
            await asyncio.sleep(interval)
            try:
                await self._renew_once(None)
            except ClaimNotHeldError:
                return
            except CoorddError as exc:  # transient: retry until the lease would have lapsed
                if time.monotonic() >= self._valid_until:
                    self._mark_lost(f"could not renew before the lease lapsed ({exc.reason})")
                    return
                interval = max(min(interval, self._valid_until - time.monotonic()) / 2, 0.05)

    async def _finish(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if not self.lost:
            c = self.claim
            with contextlib.suppress(ClaimNotHeldError):
                await self._claims.release(c.namespace, c.resource, c.fencing_token)
            self._mark_released()

    def _mark_released(self) -> None:
        self._lost_why = "released"
        self.lost_event.set()


class Claims(Face[AsyncClaims]):
    """Blocking ``client.claims``; see ``AsyncClaims`` for the semantics of each call."""

    acquire = blocking(AsyncClaims.acquire)
    acquire_any = blocking(AsyncClaims.acquire_any)
    acquire_all = blocking(AsyncClaims.acquire_all)
    renew = blocking(AsyncClaims.renew)
    release = blocking(AsyncClaims.release)
    get = blocking(AsyncClaims.get)
    list = blocking(AsyncClaims.list)
    hold = blocking_context(AsyncClaims.hold)

    def renew_held(self, held: HeldClaim, *, progress: str | None = None) -> None:
        """Renew a claim held by ``hold()`` now, recording progress."""
        self._loop.run(held.renew(progress=progress))
