"""The gate, admin and watch domain services without I/O: what each adds above storage."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from coordd import audit
from coordd.domain.admin import AdminService, ForceRelease, Purge
from coordd.domain.gate import GateCheck, GateService, GateVerdict
from coordd.domain.models import Change, Claim, Fence, Identity
from coordd.domain.watch import WatchQuery, WatchService
from coordd.errors import RevisionCompactedError

OPERATOR = Identity(agent_id="ops", role="admin")
T0 = datetime(2030, 1, 1, tzinfo=UTC)


class GateStore:
    def __init__(self) -> None:
        self.asked: list[GateCheck] = []

    async def check(self, q: GateCheck) -> GateVerdict:
        self.asked.append(q)
        return GateVerdict(lost_claims=[], moved_namespaces=[])


async def test_a_gate_with_nothing_to_check_passes_without_a_round_trip() -> None:
    store = GateStore()
    gate = GateService(store)
    assert (await gate.check(GateCheck(fences=[], read={}, kinds=["memory"]))).passed
    assert store.asked == []
    fence = Fence(namespace="b", resource="r", token=1)
    await gate.check(GateCheck(fences=[fence], read={"z": 1, "a": 2}, kinds=[]))
    assert list(store.asked[0].read) == ["a", "z"], "namespaces go in name order"


class AdminStore:
    def __init__(self, held: Claim | None) -> None:
        self.held = held

    async def force_release(
        self, namespace: str, resource: str, operator: str, reason: str
    ) -> tuple[int, Claim | None]:
        return 8, self.held

    async def purge(self, namespace: str, operator: str, reason: str) -> tuple[int, dict[str, int]]:
        return 9, {"claims": 2, "memory": 3}


def audited(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == audit.LOGGER_NAME]


async def test_admin_actions_are_audited_with_what_they_removed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=audit.LOGGER_NAME)
    held = Claim(
        namespace="ns",
        resource="r",
        holder_agent_id="w1",
        holder_role="worker",
        fencing_token=4,
        acquire_time=T0,
        expire_time=T0,
    )
    out = await AdminService(AdminStore(held)).force_release(
        OPERATOR, ForceRelease(namespace="ns", resource="r", reason="stuck")
    )
    assert out.revision == 8 and out.claim == held
    await AdminService(AdminStore(None)).force_release(
        OPERATOR, ForceRelease(namespace="ns", resource="free", reason="")
    )
    await AdminService(AdminStore(None)).purge(OPERATOR, Purge(namespace="ns", reason="done"))
    events = audited(caplog)
    assert [(e["action"], e.get("holder_agent_id"), e.get("removed")) for e in events] == [
        ("force_release", "w1", None),  # nothing held on "free": nothing to audit
        ("purge", None, 5),
    ]


def change(namespace: str, revision: int) -> Change:
    return Change(
        namespace=namespace,
        revision=revision,
        seq=0,
        kind="memory",
        key="k",
        op="put",
        agent_id="a",
        time=T0,
        data_json="{}",
    )


class ChangeStore:
    """Serves *batches* in turn, then nothing."""

    def __init__(self, batches: list[list[Change]]) -> None:
        self.batches = batches
        self.cursors_seen: list[dict[str, int]] = []

    async def positions(self, q: WatchQuery) -> dict[str, tuple[int, int]]:
        return {"ns": (5, 0)}

    async def check_compaction(
        self, q: WatchQuery, cursors: dict[str, int], default_after: int
    ) -> None:
        return None

    async def after(
        self, q: WatchQuery, cursors: dict[str, int], default_after: int
    ) -> tuple[list[Change], bool]:
        self.cursors_seen.append(dict(cursors))
        return (self.batches.pop(0) if self.batches else []), False


class Notifier:
    recheck_s = 60.0

    @contextlib.asynccontextmanager
    async def follow(self, pattern: str, is_prefix: bool) -> AsyncIterator[asyncio.Event]:
        yield asyncio.Event()

    async def wait(self, changed: asyncio.Event, timeout: float) -> None:
        await asyncio.sleep(0)


async def test_a_watch_from_now_starts_after_the_current_revision_and_resumes_after() -> None:
    store = ChangeStore([[change("ns", 6)], [change("other", 3)]])
    stream = WatchService(store, Notifier()).watch(
        WatchQuery(namespace="ns", prefix=True, start_revision=0, after={"other": 2})
    )
    assert [c.revision for c in await anext(stream)] == [6]
    assert [c.revision for c in await anext(stream)] == [3]
    assert store.cursors_seen[:2] == [{"ns": 5, "other": 2}, {"ns": 6, "other": 2}]
    await stream.aclose()


async def test_a_gap_in_the_log_is_never_skipped_silently() -> None:
    store = ChangeStore([[change("ns", 2)], [change("ns", 5)]])
    stream = WatchService(store, Notifier()).watch(
        WatchQuery(namespace="ns", prefix=False, start_revision=2, after={})
    )
    assert [c.revision for c in await anext(stream)] == [2]
    with pytest.raises(RevisionCompactedError):
        await anext(stream)
