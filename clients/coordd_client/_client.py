"""``AsyncClient`` (asyncio) and ``Client`` (blocking): one logic, two faces.

The blocking client runs the asyncio client on a private event-loop thread, so both share
every line of request building, error translation, renewal and session bookkeeping. Each
service's blocking face (``Claims``, ``Memory``, ...) sits beside its asyncio twin in the
service's module, one line a method, so a new method is written in one file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Self

from ._admin import Admin, AsyncAdmin
from ._agreements import Agreements, AsyncAgreements
from ._blocking import Face, LoopThread, blocking, connected
from ._cache import CacheConfig
from ._claims import AsyncClaims, Claims
from ._closing import Closing
from ._context import AsyncContext, Context
from ._convert import seconds
from ._core import DEFAULT_TIMEOUT, Core, open_channel, read_token
from ._gate import GateResult, check_gate
from ._idempotency import AsyncIdempotency, Idempotency
from ._memory import AsyncMemory, Memory
from ._models import (
    Fence,
    TLSConfig,
)
from ._session import Session
from ._watch import AsyncWatch, Watch


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
        session_stream: bool = True,
    ) -> Self:
        """Connect to *target* (``host:port`` or a Unix socket path; default ``$COORDD_ADDR``,
        then 127.0.0.1:7420).

        Args:
            target: Daemon or sidecar address.
            agent_id: This agent's id (``coordd-agent-id``). With a token or a certificate the
                credential names the agent: pass its id, or "" (a token refuses another id).
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
            session_stream: Send unary calls on one session stream when the server offers
                it (falls back to unary calls when it does not).
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
            session_stream=session_stream,
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


class Client(Closing, Face[AsyncClient]):
    """An agent's blocking connection to coordd. ``Client.connect(...)``, then ``close()``.

    The same API as ``AsyncClient`` without ``await``; see it for each attribute.
    """

    gate = blocking(AsyncClient.gate)

    def __init__(self, inner: AsyncClient, loop: LoopThread) -> None:
        super().__init__(inner, loop)
        self.claims = Claims(inner.claims, loop)
        self.idempotency = Idempotency(inner.idempotency, loop)
        self.context = Context(inner.context, loop)
        self.agreements = Agreements(inner.agreements, loop)
        self.memory = Memory(inner.memory, loop)
        self.watch = Watch(inner.watch, loop)
        self.admin = Admin(inner.admin, loop)

    connect = staticmethod(connected(AsyncClient.connect, lambda a, loop: Client(a, loop)))
    """Connect; arguments as for ``AsyncClient.connect``, without ``await``."""

    @property
    def session(self) -> Session:
        return self._a.session

    @property
    def agent_id(self) -> str:
        return self._a.agent_id

    def close(self) -> None:
        self._loop.run(self._a.close())
        self._loop.stop()
