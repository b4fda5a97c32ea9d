"""``AsyncClient`` (asyncio) and ``Client`` (blocking): one logic, two faces.

The blocking client runs the asyncio client on a private event-loop thread, so both share
every line of request building, error translation, renewal and session bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from datetime import timedelta
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

from ._admin import AsyncAdmin
from ._agreements import Agreements, AsyncAgreements
from ._cache import CacheConfig
from ._claims import AsyncClaims, HeldClaim
from ._context import AsyncContext
from ._convert import seconds
from ._core import DEFAULT_TIMEOUT, Core, open_channel, read_token
from ._gate import GateResult, check_gate
from ._idempotency import AsyncIdempotency, encode_result, fingerprint, next_step
from ._memory import AsyncMemory
from ._models import (
    ChangeEvent,
    ContextEntry,
    Fence,
    TLSConfig,
)
from ._session import Session
from ._watch import AsyncWatch

T = TypeVar("T")


class AsyncClient:
    """An agent's asyncio connection to coordd (or to its sidecar).

    Use ``await AsyncClient.connect(target, agent_id=...)`` and ``await client.close()``, or
    ``async with await AsyncClient.connect(...) as client``.

    Attributes:
        claims: Claim operations and ``hold()``.
        idempotency: Idempotency keys and ``once()``.
        context: Directional context: ``post``, ``inbox``, ``ack``, ``subscribe``.
        watch: ``async for event in client.watch(namespace)``: the change log.
        agreements: Decisions several agents must all accept: ``propose``, ``vote``, ``wait``.
        admin: Operator actions (``admin`` grant): ``force_release``, ``purge_namespace``.
        session: This agent's version vector.
    """

    def __init__(self, core: Core) -> None:
        self._core = core
        self.claims = AsyncClaims(core)
        self.idempotency = AsyncIdempotency(core)
        self.context = AsyncContext(core)
        self.memory = AsyncMemory(core)
        self.watch = AsyncWatch(core)
        self.agreements = AsyncAgreements(core)
        self.admin = AsyncAdmin(core)

    @classmethod
    async def connect(
        cls,
        target: str | None = None,
        *,
        agent_id: str,
        role: str = "",
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        tls: TLSConfig | None = None,
        timeout: timedelta | float = DEFAULT_TIMEOUT,
        connect_timeout: timedelta | float = timedelta(seconds=10),
        cache: CacheConfig | None = None,
    ) -> Self:
        """Connect to *target* (``host:port`` or a Unix socket path; default ``$COORDD_ADDR``,
        then 127.0.0.1:7420).

        Args:
            target: Daemon or sidecar address.
            agent_id: This agent's id (sent as ``coordd-agent-id`` in dev mode).
            role: This agent's role (``coordd-agent-role``).
            token: Bearer token for daemons in token mode.
            token_file: File holding the bearer token (read once here, surrounding whitespace
                stripped), e.g. a mounted Kubernetes secret; instead of *token*.
            tls: TLS settings (CA, and this agent's certificate for mtls daemons).
            timeout: Default deadline of each call.
            connect_timeout: How long to wait for the server to answer at all.
            cache: Keep an embedded session cache (the sidecar's, in-process): memory reads
                and completed idempotency records are answered locally when that is
                consistent with this session (never older than what it wrote or read).
        """
        token = read_token(token, token_file)
        channel = await open_channel(target, timedelta(seconds=seconds(connect_timeout)), tls)
        core = Core(
            channel,
            agent_id=agent_id,
            role=role,
            token=token,
            timeout=timedelta(seconds=seconds(timeout)),
            cache=cache,
        )
        return cls(core)

    @property
    def session(self) -> Session:
        return self._core.session

    async def gate(
        self,
        fences: Iterable[Fence] = (),
        *,
        read: Mapping[str, int] | None = None,
        kinds: Iterable[str] = (),
    ) -> GateResult:
        """Check, right before a side effect outside coordd, that it still may happen.

        Answers in-band (never raises for a refusal): ``passed`` is True when every fence
        still names the live grant and no namespace in *read* has changed since the revision
        given. Otherwise ``lost_claims`` says which claim was lost and to whom,
        ``moved_namespaces`` which namespace moved, to what revision and by whose change, and
        ``explain()`` says it in a sentence with what to do next.

        Args:
            fences: The claims the effect is made under (``held.fence``).
            read: Namespace -> revision the decision was based on, usually
                ``client.session.vector`` (or a subset of it).
            kinds: Change kinds that count as a move (e.g. ``["memory"]``); default all.
        """
        return await check_gate(self._core, fences, read, kinds)

    @property
    def agent_id(self) -> str:
        return self._core.agent_id

    async def close(self) -> None:
        if self._core.cache is not None:
            await self._core.cache.close()
        await self._core.channel.close(None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _LoopThread:
    """A private event loop on a daemon thread, for the blocking client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="coordd-client", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, stream: AsyncIterator[T]) -> Iterator[T]:
        """Drive an async iterator from a blocking caller, closing it when the caller stops."""

        async def step() -> T:
            return await anext(stream)

        try:
            while True:
                try:
                    yield self.run(step())
                except StopAsyncIteration:
                    return
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                self.run(close())

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


P = ParamSpec("P")
R = TypeVar("R")


def _blocking(loop: _LoopThread, method: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, R]:
    """A blocking twin of an async method, with the same (typed) signature."""

    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        return loop.run(method(*args, **kwargs))

    call.__doc__ = method.__doc__
    return call


class Memory:
    """Blocking ``client.memory``; see ``AsyncMemory`` for each call."""

    def __init__(self, inner: AsyncMemory, loop: _LoopThread) -> None:
        self.put = _blocking(loop, inner.put)
        self.get = _blocking(loop, inner.get)
        self.delete = _blocking(loop, inner.delete)
        self.list = _blocking(loop, inner.list)
        self.history = _blocking(loop, inner.history)
        self.search = _blocking(loop, inner.search)
        self.start_task = _blocking(loop, inner.start_task)
        self.end_task = _blocking(loop, inner.end_task)
        self.compact_episodes = _blocking(loop, inner.compact_episodes)
        self.set_policy = _blocking(loop, inner.set_policy)
        self.get_policy = _blocking(loop, inner.get_policy)


class Claims:
    """Blocking ``client.claims``; see ``AsyncClaims`` for the semantics of each call."""

    def __init__(self, inner: AsyncClaims, loop: _LoopThread) -> None:
        self._a = inner
        self._loop = loop
        self.acquire = _blocking(loop, inner.acquire)
        self.acquire_any = _blocking(loop, inner.acquire_any)
        self.acquire_all = _blocking(loop, inner.acquire_all)
        self.renew = _blocking(loop, inner.renew)
        self.release = _blocking(loop, inner.release)
        self.get = _blocking(loop, inner.get)
        self.list = _blocking(loop, inner.list)

    @contextlib.contextmanager
    def hold(
        self,
        namespace: str,
        resource: str,
        ttl: timedelta | float,
        *,
        wait: timedelta | float | None = None,
        progress: str = "",
    ) -> Iterator[HeldClaim]:
        """Hold a claim for a ``with`` block, renewed in the background (see AsyncClaims.hold)."""
        cm = self._a.hold(namespace, resource, ttl, wait=wait, progress=progress)
        held = self._loop.run(cm.__aenter__())
        try:
            yield held
        except BaseException as exc:
            self._loop.run(cm.__aexit__(type(exc), exc, exc.__traceback__))
            raise
        else:
            self._loop.run(cm.__aexit__(None, None, None))

    def renew_held(self, held: HeldClaim, *, progress: str | None = None) -> None:
        """Renew a claim held by ``hold()`` now, recording progress."""
        self._loop.run(held.renew(progress=progress))


class Idempotency:
    """Blocking ``client.idempotency``; see ``AsyncIdempotency``."""

    def __init__(self, inner: AsyncIdempotency, loop: _LoopThread) -> None:
        self._a = inner
        self._loop = loop
        self.begin = _blocking(loop, inner.begin)
        self.complete = _blocking(loop, inner.complete)
        self.fail = _blocking(loop, inner.fail)
        self.get = _blocking(loop, inner.get)

    def once(
        self,
        namespace: str,
        key: str,
        payload: Any,
        work: Callable[[], Any],
        *,
        lease: timedelta | float = timedelta(seconds=60),
        retention: timedelta | float | None = None,
        fence: Fence | None = None,
        max_wait: timedelta | float = timedelta(minutes=5),
    ) -> Any:
        """Run *work* (in this thread) at most once for *key*; see ``AsyncIdempotency.once``."""
        fp = fingerprint(payload)
        deadline = time.monotonic() + seconds(max_wait)
        while True:
            begun = self.begin(namespace, key, fp, lease=lease, retention=retention)
            step = next_step(namespace, key, begun, deadline)
            if step.kind == "return":
                return step.value
            if step.kind == "raise":
                raise step.value
            if step.kind == "wait":
                time.sleep(step.value)
                continue
            try:
                value = work()
            except BaseException as exc:
                self.fail(namespace, key, begun.attempt, retryable=True, error=repr(exc))
                raise
            self.complete(namespace, key, begun.attempt, encode_result(value), fence=fence)
            return value


class Admin:
    """Blocking ``client.admin``; see ``AsyncAdmin``."""

    def __init__(self, inner: AsyncAdmin, loop: _LoopThread) -> None:
        self.force_release = _blocking(loop, inner.force_release)
        self.purge_namespace = _blocking(loop, inner.purge_namespace)


class Context:
    """Blocking ``client.context``; see ``AsyncContext``."""

    def __init__(self, inner: AsyncContext, loop: _LoopThread) -> None:
        self._a = inner
        self._loop = loop
        self.post = _blocking(loop, inner.post)
        self.inbox = _blocking(loop, inner.inbox)
        self.sent = _blocking(loop, inner.sent)
        self.ack = _blocking(loop, inner.ack)

    def subscribe(
        self,
        namespace: str,
        *,
        after_id: int = 0,
        unread: bool = False,
        context_type: str = "",
        lease: timedelta | float | None = None,
    ) -> Iterator[ContextEntry]:
        return self._loop.iterate(
            self._a.subscribe(
                namespace,
                after_id=after_id,
                unread=unread,
                context_type=context_type,
                lease=lease,
            )
        )


class Client:
    """An agent's blocking connection to coordd. ``Client.connect(...)``, then ``close()``.

    Attributes:
        claims: Claim operations and ``hold()``.
        idempotency: Idempotency keys and ``once()``.
        session: This agent's version vector.
    """

    def __init__(self, inner: AsyncClient, loop: _LoopThread) -> None:
        self._inner = inner
        self._loop = loop
        self.claims = Claims(inner.claims, loop)
        self.idempotency = Idempotency(inner.idempotency, loop)
        self.context = Context(inner.context, loop)
        self.agreements = Agreements(inner.agreements, loop)
        self.memory = Memory(inner.memory, loop)
        self.gate = _blocking(loop, inner.gate)
        self.admin = Admin(inner.admin, loop)

    @classmethod
    def connect(
        cls,
        target: str | None = None,
        *,
        agent_id: str,
        role: str = "",
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        tls: TLSConfig | None = None,
        timeout: timedelta | float = DEFAULT_TIMEOUT,
        connect_timeout: timedelta | float = timedelta(seconds=10),
        cache: CacheConfig | None = None,
    ) -> Client:
        """Connect; arguments as for ``AsyncClient.connect``."""
        loop = _LoopThread()
        try:
            inner = loop.run(
                AsyncClient.connect(
                    target,
                    agent_id=agent_id,
                    role=role,
                    token=token,
                    token_file=token_file,
                    tls=tls,
                    timeout=timeout,
                    connect_timeout=connect_timeout,
                    cache=cache,
                )
            )
        except BaseException:
            loop.stop()
            raise
        return cls(inner, loop)

    @property
    def session(self) -> Session:
        return self._inner.session

    @property
    def agent_id(self) -> str:
        return self._inner.agent_id

    def watch(
        self,
        namespace: str,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        reconnect_for: float = 30.0,
    ) -> Iterator[ChangeEvent]:
        """The change log as a blocking iterator; see ``AsyncWatch.__call__``."""
        return self._loop.iterate(
            self._inner.watch(
                namespace,
                prefix=prefix,
                start_revision=start_revision,
                reconnect_for=reconnect_for,
            )
        )

    def close(self) -> None:
        self._loop.run(self._inner.close())
        self._loop.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
