"""IdempotencyService without I/O: how an attempt's end is recorded, reads at a revision."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from coordd.domain.idempotency import (
    Begin,
    Completion,
    Failure,
    Finish,
    IdempotencyService,
    RecordRead,
)
from coordd.domain.models import (
    BeginOutcome,
    Fence,
    IdempotencyRecord,
    IdempotencyState,
    Identity,
)
from coordd.errors import RevisionNotReachedError

WHO = Identity(agent_id="runner", role="worker")
FENCE = Fence(namespace="ns", resource="job", token=7)
T0 = datetime(2030, 1, 1, tzinfo=UTC)
RECORD = IdempotencyRecord(
    namespace="ns",
    key="k",
    state=IdempotencyState.COMPLETED,
    attempt=1,
    fingerprint=b"",
    result=b"",
    error="",
    runner_agent_id="runner",
    create_time=T0,
    lease_expire_time=None,
    expire_time=T0,
)


class FakeStore:
    def __init__(self, revision: int = 3) -> None:
        self.finished: list[tuple[Identity, Finish]] = []
        self.revision = revision
        self.reads = 0

    async def begin(self, who: Identity, b: Begin) -> BeginOutcome:
        raise AssertionError("not called here")

    async def finish(self, who: Identity, f: Finish) -> tuple[int, IdempotencyRecord]:
        self.finished.append((who, f))
        return self.revision, RECORD

    async def get(self, namespace: str, key: str) -> tuple[int, IdempotencyRecord | None]:
        self.reads += 1
        return self.revision, None


def failure(retryable: bool) -> Failure:
    return Failure(
        namespace="ns", key="k", attempt=2, retryable=retryable, error="boom", fence=FENCE
    )


async def test_completion_records_the_result_under_the_callers_fence() -> None:
    store = FakeStore()
    service = IdempotencyService(store)
    done = Completion(namespace="ns", key="k", attempt=1, result=b"ok", fence=FENCE)
    assert await service.complete(WHO, done) == (3, RECORD)
    assert store.finished == [
        (
            WHO,
            Finish(
                namespace="ns",
                key="k",
                attempt=1,
                outcome="completed",
                result=b"ok",
                error="",
                fence=FENCE,
            ),
        )
    ]


async def test_a_retryable_failure_releases_the_key_and_any_other_is_final() -> None:
    store = FakeStore()
    service = IdempotencyService(store)
    await service.fail(WHO, failure(retryable=True))
    await service.fail(WHO, failure(retryable=False))
    assert [f.outcome for _, f in store.finished] == ["released", "failed"]
    assert all(f.result is None and f.error == "boom" for _, f in store.finished)


async def test_get_refuses_a_revision_the_store_has_not_reached() -> None:
    store = FakeStore(revision=3)
    service = IdempotencyService(store)
    assert await service.get(RecordRead(namespace="ns", key="k", min_revision=3), 0) == (3, None)
    with pytest.raises(RevisionNotReachedError):
        await service.get(RecordRead(namespace="ns", key="k", min_revision=4), 0)
    assert store.reads == 2
