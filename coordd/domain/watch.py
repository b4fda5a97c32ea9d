"""Watch: a namespace's change log (or a prefix's), in revision order, gapless, resumable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from coordd.domain.context import Notifier
from coordd.domain.models import Change
from coordd.errors import RevisionCompactedError


@dataclass(frozen=True, slots=True, kw_only=True)
class WatchQuery:
    """Watch: *namespace*'s change log (or every namespace under it, *prefix*), from
    *start_revision* (0: only new changes), resuming after the revisions in *after*."""

    namespace: str
    prefix: bool
    start_revision: int
    after: dict[str, int]


class ChangeStore(Protocol):
    async def positions(self, q: WatchQuery) -> dict[str, tuple[int, int]]: ...

    async def check_compaction(
        self, q: WatchQuery, cursors: dict[str, int], default_after: int
    ) -> None: ...

    async def after(
        self, q: WatchQuery, cursors: dict[str, int], default_after: int
    ) -> tuple[list[Change], bool]: ...


class WatchService:
    """Change streams: whole revisions in order per namespace, each exactly once, and a
    refusal rather than a silent gap when compaction overtakes a stream.

    Attributes:
        store: The change log, for calls without a rule here.
    """

    def __init__(self, store: ChangeStore, notifier: Notifier) -> None:
        self.store = store
        self._notifier = notifier

    async def watch(self, q: WatchQuery) -> AsyncIterator[list[Change]]:
        """Batches of whole revisions, in order per namespace; each revision exactly once.

        ``q.after`` maps namespaces to the last revision the caller already has (a resume).
        """
        async with self._notifier.follow(q.namespace, q.prefix) as changed:
            if q.start_revision > 0:
                cursors: dict[str, int] = {}
                default_after = q.start_revision - 1
            else:  # only what happens from now on
                positions = await self.store.positions(q)
                cursors = {ns: revision for ns, (revision, _) in positions.items()}
                default_after = 0
            cursors.update(q.after)
            await self.store.check_compaction(q, cursors, default_after)
            while True:
                changed.clear()  # before reading: a change after the read sets it again
                batch, more = await self.store.after(q, cursors, default_after)
                if batch:
                    for change in batch:
                        expected = cursors.get(change.namespace, default_after) + 1
                        if change.revision > expected:
                            # Revisions have no gaps in the log: a gap means compaction
                            # overtook this stream. Never skip silently.
                            raise RevisionCompactedError(change.namespace, change.revision)
                        cursors[change.namespace] = change.revision
                    yield batch
                    if more:
                        continue
                # Caught up: a change committed after the read set `changed` (cleared before
                # it), so waiting loses nothing and saves a read per wake-up on every stream.
                await self._notifier.wait(changed, self._notifier.recheck_s)
