"""``CoorddSaver``: a LangGraph checkpointer whose writes to a thread are fenced by a claim.

Two processes resuming one thread each write checkpoints whose parent is the head they read,
and the chain forks (langgraph#8796). Here the first write to a thread acquires a claim on it
(namespace ``<root>/<thread>``, resource ``writer``) and every later write carries that claim's
fence, checked by coordd inside the write's transaction. A second writer is refused before it
writes anything (``ThreadHeldError``, naming the holder and its lease), and a writer that lost
its claim (paused past its lease while another process took over) has its next write refused
by the daemon, so the chain never forks.

The claim is renewed in the background while the saver holds it and released by ``close()``
(or ``release(thread_id)``); if the process dies, the lease lapses and another process may
take the thread over, resuming from its latest checkpoint.

The fence tells agents apart, not processes: two processes that share one coordd identity are
one agent to the daemon. Give each process its own agent id (``from_addr`` defaults to
``langgraph-<pid>``); the saver also refuses a thread whose claim its own agent holds for
another saver instance, which catches the usual mistake.

Storage, per thread namespace: ``checkpoint|<ns>|<id>`` (the serialized checkpoint and its
metadata, one entry each, at most 1 MiB of JSON), ``head|<ns>`` (the latest checkpoint id of
each checkpoint namespace, written in the checkpoint's transaction) and
``writes|<ns>|<id>|<task>`` (a task's pending writes, merged).
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Self

import grpc
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from coordd.errors import CoorddError, FencingTokenStaleError
from coordd_client import (
    AsyncClient,
    Claim,
    ClaimHeldError,
    Client,
    Fence,
    HeldClaim,
    MemoryEntry,
    MemoryPut,
)
from coordd_client._closing import Closing

from . import _names
from ._bridge import Bridge, connect

CHECKPOINT_TAG = "langgraph:checkpoint"
WRITES_TAG = "langgraph:writes"
WRITER = "writer"
_PAGE = 1000


class ThreadHeldError(CoorddError, code=grpc.StatusCode.FAILED_PRECONDITION, reason="THREAD_HELD"):
    """Another writer owns this thread's checkpoint chain; this saver wrote nothing.

    Attributes:
        thread_id: The thread.
        holder: The claim of the writer that owns it (None if it is free now: the claim was
            lost and the write refused, so the chain did not fork).
    """

    def __init__(self, thread_id: str, holder: Claim | None, why: str) -> None:
        self.thread_id = thread_id
        self.holder = holder
        super().__init__(
            f"thread {thread_id!r}: {why}. Nothing was written, so its checkpoint chain did not"
            " fork. Resume the thread in the process that holds it, wait until its claim is"
            " released or lapses, or use another thread_id."
        )


def _holder_text(claim: Claim | None) -> str:
    if claim is None:
        return "another writer holds it"
    until = claim.expire_time.isoformat().replace("+00:00", "Z")
    return f"held by {claim.holder_agent_id} (fencing token {claim.fencing_token}) until {until}"


class _Held:
    """A thread claim this saver holds: the hold() context it entered, and its claim."""

    def __init__(self, cm: AbstractAsyncContextManager[HeldClaim], held: HeldClaim) -> None:
        self.cm = cm
        self.held = held


class CoorddSaver(Closing, BaseCheckpointSaver[int]):
    """LangGraph checkpointer on coordd whose writes per thread are fenced by a claim.

    Args:
        client: A blocking ``Client`` or an ``AsyncClient``.
        root: The coordd namespace threads live under (``<root>/<thread>``).
        lease: Seconds of the thread claim's lease (renewed every third of it while held).
        wait: Seconds to wait for a thread held by another writer before refusing.
        serde: LangGraph serializer (default: JsonPlusSerializer).
    """

    def __init__(
        self,
        client: Client | AsyncClient,
        *,
        root: str = "langgraph/threads",
        lease: float = 60.0,
        wait: float = 0.0,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self._bridge = client if isinstance(client, Bridge) else Bridge(client)
        self.root = _names.check_root(root)
        self.lease = lease
        self.wait = wait
        self.instance = f"saver-{uuid.uuid4().hex[:12]}"
        """Recorded as the claim's progress: tells this saver apart from others of its agent."""
        self._held: dict[str, _Held] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def from_addr(
        cls,
        addr: str | None = None,
        *,
        root: str = "langgraph/threads",
        lease: float = 60.0,
        wait: float = 0.0,
        serde: SerializerProtocol | None = None,
        **connect_kwargs: Any,
    ) -> CoorddSaver:
        """Connect a blocking client (no *addr*: ``$COORDD_ADDR``) and wrap it; ``close()``
        releases the thread claims and closes it. ``agent_id`` defaults to
        ``$COORDD_AGENT_ID`` or ``langgraph-<pid>``."""
        bridge = connect(addr, connect_kwargs)
        return cls(bridge, root=root, lease=lease, wait=wait, serde=serde)  # type: ignore[arg-type]

    # -- lifecycle -------------------------------------------------------------------------

    def release(self, thread_id: str) -> None:
        """Release this saver's claim on a thread (another process may then write it)."""
        self._bridge.run(self._release(thread_id))

    async def arelease(self, thread_id: str) -> None:
        await self._bridge.arun(self._release(thread_id))

    def close(self) -> None:
        """Release every thread claim, and close the client if ``from_addr`` opened it."""
        self._bridge.run(self._release_all())
        self._bridge.close()

    async def aclose(self) -> None:
        await self._bridge.arun(self._release_all())
        self._bridge.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def holds(self, thread_id: str) -> bool:
        """True while this saver holds the claim on *thread_id*."""
        held = self._held.get(thread_id)
        return held is not None and not held.held.lost

    # -- BaseCheckpointSaver ---------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._bridge.run(self._get_tuple(config))

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._bridge.arun(self._get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        yield from self._bridge.run(self._list(config, filter, before, limit))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for tup in await self._bridge.arun(self._list(config, filter, before, limit)):
            yield tup

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._bridge.run(self._put(config, checkpoint, metadata))

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._bridge.arun(self._put(config, checkpoint, metadata))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._bridge.run(self._put_writes(config, writes, task_id, task_path))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._bridge.arun(self._put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._bridge.run(self._delete_thread(thread_id))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._bridge.arun(self._delete_thread(thread_id))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._bridge.run(self._copy_thread(source_thread_id, target_thread_id))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, pending write and head of a thread to another thread
        (whose claim this saver takes for the copy)."""
        await self._bridge.arun(self._copy_thread(source_thread_id, target_thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._bridge.run(self._delete_for_runs(run_ids))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints whose metadata names one of *run_ids*, with their writes,
        under each affected thread's claim; heads move back to the latest checkpoint left."""
        await self._bridge.arun(self._delete_for_runs(run_ids))

    # -- the claim ---------------------------------------------------------------------------

    def _namespace(self, thread_id: str) -> str:
        segment = _names.encode_label(thread_id)
        if not thread_id or len(segment) > _names.SEGMENT_MAX_BYTES:
            # Long ids keep a readable head and a digest that keeps them distinct.
            digest = hashlib.sha256(thread_id.encode()).hexdigest()[:32]
            segment = f"{segment[:24]}.h{digest}"
        return f"{self.root}/{segment}"

    async def _fence(self, thread_id: str) -> Fence:
        """The fence of this saver's claim on the thread, acquiring the claim if needed."""
        lock = self._locks.setdefault(thread_id, asyncio.Lock())
        async with lock:
            held = self._held.get(thread_id)
            if held is not None and not held.held.lost:
                return held.held.fence
            if held is not None:  # lost: forget it, then refuse (the run must start over)
                del self._held[thread_id]
                current = await self._bridge.aclient.claims.get(self._namespace(thread_id), WRITER)
                raise ThreadHeldError(
                    thread_id,
                    current,
                    f"this saver lost its claim on the thread ({_holder_text(current)})",
                )
            return (await self._acquire(thread_id)).fence

    async def _acquire(self, thread_id: str) -> HeldClaim:
        claims = self._bridge.aclient.claims
        namespace = self._namespace(thread_id)
        deadline = time.monotonic() + self.wait
        while True:
            current = await claims.get(namespace, WRITER)
            same_agent = current is not None and (
                current.holder_agent_id == self._bridge.aclient.agent_id
                and current.progress != self.instance
            )
            if not same_agent:
                break
            if time.monotonic() >= deadline:
                raise ThreadHeldError(
                    thread_id,
                    current,
                    f"{_holder_text(current)}, for another saver of the same agent: each"
                    " process needs its own agent identity",
                )
            await asyncio.sleep(min(0.5, max(deadline - time.monotonic(), 0.01)))
        cm = claims.hold(
            namespace,
            WRITER,
            ttl=self.lease,
            wait=max(deadline - time.monotonic(), 0.0) or None,
            progress=self.instance,
        )
        try:
            held = await cm.__aenter__()
        except ClaimHeldError as exc:
            raise ThreadHeldError(thread_id, exc.holder, _holder_text(exc.holder)) from exc
        self._held[thread_id] = _Held(cm, held)
        return held

    async def _release(self, thread_id: str) -> None:
        held = self._held.pop(thread_id, None)
        if held is not None:
            await held.cm.__aexit__(None, None, None)

    async def _release_all(self) -> None:
        for thread_id in list(self._held):
            await self._release(thread_id)

    async def _write(
        self,
        thread_id: str,
        key: str,
        value: Any,
        *,
        tags: Sequence[str],
        mode: str = "lww",
    ) -> None:
        """One fenced write to the thread; a stale fence becomes ThreadHeldError."""
        await self._write_all(thread_id, [(key, value, tags, mode)])

    async def _write_all(
        self, thread_id: str, writes: Sequence[tuple[str, Any, Sequence[str], str]]
    ) -> None:
        """Fenced writes (key, value, tags, mode) to the thread in one transaction: all or
        none. A stale fence becomes ThreadHeldError."""
        fence = await self._fence(thread_id)
        namespace = self._namespace(thread_id)
        try:
            await self._bridge.aclient.memory.put_many(
                [
                    MemoryPut(
                        namespace=namespace,
                        key=key,
                        value=value,
                        tier="semantic",
                        tags=tags,
                        mode=mode,
                        fence=fence,
                    )
                    for key, value, tags, mode in writes
                ]
            )
        except FencingTokenStaleError as exc:
            await self._forget(thread_id)
            current = await self._bridge.aclient.claims.get(namespace, WRITER)
            raise ThreadHeldError(
                thread_id,
                current,
                f"this saver's claim on the thread was lost and its write refused by coordd"
                f" ({_holder_text(current) if current else 'nobody holds it now'})",
            ) from exc

    async def _forget(self, thread_id: str) -> None:
        held = self._held.pop(thread_id, None)
        if held is not None:
            await held.cm.__aexit__(None, None, None)  # stops renewing; its release is refused

    # -- checkpoints -------------------------------------------------------------------------

    def _typed(self, obj: Any) -> builtins.list[str]:
        kind, data = self.serde.dumps_typed(obj)
        return [kind, base64.b64encode(data).decode()]

    def _untyped(self, pair: Sequence[str]) -> Any:
        return self.serde.loads_typed((pair[0], base64.b64decode(pair[1])))

    async def _put(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata
    ) -> RunnableConfig:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        checkpoint_ns = str(conf.get("checkpoint_ns", ""))
        checkpoint_id = checkpoint["id"]
        value = {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
            "parent_checkpoint_id": conf.get("checkpoint_id"),
            "checkpoint": self._typed(checkpoint),
            "metadata": self._typed(get_checkpoint_metadata(config, metadata)),
        }
        # The checkpoint and the head that names it commit together.
        await self._write_all(
            thread_id,
            [
                (f"checkpoint|{checkpoint_ns}|{checkpoint_id}", value, [CHECKPOINT_TAG], "lww"),
                (f"head|{checkpoint_ns}", {"checkpoint_id": checkpoint_id}, [], "lww"),
            ],
        )
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": checkpoint_id,
            }
        }

    async def _put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> None:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        checkpoint_ns = str(conf.get("checkpoint_ns", ""))
        checkpoint_id = str(conf["checkpoint_id"])
        patch = {
            str(WRITES_IDX_MAP.get(channel, idx)): [channel, *self._typed(value)]
            for idx, (channel, value) in enumerate(writes)
        }
        # A merge patch adds this call's writes to the task's entry atomically; a retried
        # call writes the same indexes again, so nothing is duplicated.
        await self._write(
            thread_id,
            f"writes|{checkpoint_ns}|{checkpoint_id}|{task_id}",
            {
                "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": checkpoint_id,
                "task_id": task_id,
                "task_path": task_path,
                "writes": patch,
            },
            tags=[WRITES_TAG, f"cp:{checkpoint_id}"],
            mode="merge",
        )

    async def _delete_thread(self, thread_id: str) -> None:
        namespace = self._namespace(thread_id)
        memory = self._bridge.aclient.memory
        fence = await self._fence(thread_id)
        try:
            async for entry in self._scan(namespace, ()):
                if entry.namespace == namespace:
                    await memory.delete(namespace, entry.key, fence=fence)
        except FencingTokenStaleError as exc:
            await self._forget(thread_id)
            raise ThreadHeldError(thread_id, None, "this saver's claim was lost") from exc
        await self._release(thread_id)

    @contextlib.asynccontextmanager
    async def _owning(self, thread_id: str) -> AsyncIterator[Fence]:
        """This saver's fence on the thread for a maintenance operation; a claim taken just
        for it is released afterwards."""
        held_before = self.holds(thread_id)
        fence = await self._fence(thread_id)
        try:
            yield fence
        finally:
            if not held_before:
                await self._release(thread_id)

    async def _copy_thread(self, source: str, target: str) -> None:
        entries = [
            e
            async for e in self._scan(self._namespace(source), ())
            if e.namespace == self._namespace(source)
        ]
        if not entries:
            return
        copies = []
        for e in entries:
            value = dict(e.value)
            if "thread_id" in value:
                value["thread_id"] = target
            copies.append((e.key, value, e.tags, "lww"))
        async with self._owning(target):
            for start in range(0, len(copies), _PAGE):  # PutMemories takes 1,000 at a time
                await self._write_all(target, copies[start : start + _PAGE])

    async def _delete_for_runs(self, run_ids: Sequence[str]) -> None:
        wanted = set(run_ids)
        if not wanted:
            return
        doomed: dict[str, list[dict[str, Any]]] = {}
        async for e in self._scan(self.root, [CHECKPOINT_TAG]):
            v = e.value
            if isinstance(v, dict) and self._untyped(v["metadata"]).get("run_id") in wanted:
                doomed.setdefault(v["thread_id"], []).append(v)
        for thread_id, checkpoints in doomed.items():
            namespace = self._namespace(thread_id)
            memory = self._bridge.aclient.memory
            async with self._owning(thread_id) as fence:
                for v in checkpoints:
                    ns, cid = v["checkpoint_ns"], v["checkpoint_id"]
                    await memory.delete(namespace, f"checkpoint|{ns}|{cid}", fence=fence)
                    async for w in self._scan(namespace, [WRITES_TAG, f"cp:{cid}"]):
                        if w.namespace == namespace and w.value.get("checkpoint_ns") == ns:
                            await memory.delete(namespace, w.key, fence=fence)
                await self._repoint_heads(thread_id, {v["checkpoint_ns"] for v in checkpoints})

    async def _repoint_heads(self, thread_id: str, checkpoint_namespaces: set[str]) -> None:
        """After deletions: each head names the latest checkpoint left (or goes)."""
        namespace = self._namespace(thread_id)
        latest: dict[str, str] = {}
        async for e in self._scan(namespace, [CHECKPOINT_TAG]):
            ns, cid = e.value["checkpoint_ns"], e.value["checkpoint_id"]
            if e.namespace == namespace and ns in checkpoint_namespaces:
                latest[ns] = max(latest.get(ns, ""), cid)
        for ns in checkpoint_namespaces:
            if ns in latest:
                await self._write(thread_id, f"head|{ns}", {"checkpoint_id": latest[ns]}, tags=[])
            else:
                fence = await self._fence(thread_id)
                await self._bridge.aclient.memory.delete(namespace, f"head|{ns}", fence=fence)

    async def _scan(self, prefix: str, tags: Sequence[str]) -> AsyncIterator[MemoryEntry]:
        memory = self._bridge.aclient.memory
        token = ""
        while True:
            page = await memory.list(prefix, tags=tags, page_size=_PAGE, page_token=token)
            for entry in page.entries:
                yield entry
            if not page.next_page_token:
                return
            token = page.next_page_token

    async def _pending_writes(
        self, namespace: str, checkpoint_ns: str, checkpoint_id: str
    ) -> builtins.list[tuple[str, str, Any]]:
        entries = [
            e
            async for e in self._scan(namespace, [WRITES_TAG, f"cp:{checkpoint_id}"])
            if e.namespace == namespace
        ]
        return self._decode_writes(entries, checkpoint_ns, checkpoint_id)

    def _decode_writes(
        self, entries: Sequence[MemoryEntry], checkpoint_ns: str, checkpoint_id: str
    ) -> builtins.list[tuple[str, str, Any]]:
        rows: builtins.list[tuple[tuple[str, str, int], tuple[str, str, Any]]] = []
        for e in entries:
            v = e.value
            if v.get("checkpoint_ns") != checkpoint_ns or v.get("checkpoint_id") != checkpoint_id:
                continue
            for idx, (channel, *typed) in v["writes"].items():
                rows.append(
                    (
                        writes_sort_key(v.get("task_path", ""), v["task_id"], int(idx)),
                        (v["task_id"], channel, self._untyped(typed)),
                    )
                )
        rows.sort(key=lambda r: r[0])
        return [w for _, w in rows]

    def _tuple(
        self, value: dict[str, Any], pending: builtins.list[tuple[str, str, Any]]
    ) -> CheckpointTuple:
        thread_id = value["thread_id"]
        checkpoint_ns = value["checkpoint_ns"]
        parent = value.get("parent_checkpoint_id")
        return CheckpointTuple(
            config={
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": checkpoint_ns,
                    "checkpoint_id": value["checkpoint_id"],
                }
            },
            checkpoint=self._untyped(value["checkpoint"]),
            metadata=self._untyped(value["metadata"]),
            parent_config=(
                {
                    "configurable": {
                        "thread_id": thread_id,
                        "checkpoint_ns": checkpoint_ns,
                        "checkpoint_id": parent,
                    }
                }
                if parent
                else None
            ),
            pending_writes=pending,
        )

    async def _get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        conf = config["configurable"]
        thread_id = str(conf["thread_id"])
        checkpoint_ns = str(conf.get("checkpoint_ns", ""))
        namespace = self._namespace(thread_id)
        memory = self._bridge.aclient.memory
        checkpoint_id = get_checkpoint_id(config)
        if not checkpoint_id:
            head = await memory.get(namespace, f"head|{checkpoint_ns}")
            if head is None:
                return None
            checkpoint_id = str(head.value["checkpoint_id"])
        entry, pending = await asyncio.gather(
            memory.get(namespace, f"checkpoint|{checkpoint_ns}|{checkpoint_id}"),
            self._pending_writes(namespace, checkpoint_ns, checkpoint_id),
        )
        if entry is None:
            return None
        return self._tuple(entry.value, pending)

    async def _list(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> builtins.list[CheckpointTuple]:
        conf = (config or {}).get("configurable", {})
        prefix = self._namespace(str(conf["thread_id"])) if "thread_id" in conf else self.root
        checkpoint_ns = conf.get("checkpoint_ns")
        only_id = conf.get("checkpoint_id")
        before_id = get_checkpoint_id(before) if before else None
        values = [
            e.value
            async for e in self._scan(prefix, [CHECKPOINT_TAG])
            if isinstance(e.value, dict) and "checkpoint" in e.value
        ]
        chosen: builtins.list[tuple[dict[str, Any], dict[str, Any]]] = []
        for v in sorted(values, key=lambda v: v["checkpoint_id"], reverse=True):
            if checkpoint_ns is not None and v["checkpoint_ns"] != checkpoint_ns:
                continue
            if only_id and v["checkpoint_id"] != only_id:
                continue
            if before_id and v["checkpoint_id"] >= before_id:
                continue
            metadata = self._untyped(v["metadata"])
            if filter and not all(metadata.get(k) == want for k, want in filter.items()):
                continue
            chosen.append((v, metadata))
            if limit is not None and len(chosen) >= limit:
                break
        writes: dict[str, builtins.list[MemoryEntry]] = {}
        for thread_id in {v["thread_id"] for v, _ in chosen}:
            namespace = self._namespace(thread_id)
            writes[thread_id] = [
                e async for e in self._scan(namespace, [WRITES_TAG]) if e.namespace == namespace
            ]
        return [
            self._tuple(
                v,
                self._decode_writes(writes[v["thread_id"]], v["checkpoint_ns"], v["checkpoint_id"]),
            )
            for v, _ in chosen
        ]
