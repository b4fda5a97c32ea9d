"""Watch: a namespace's change log as a stream, resumed by itself after disconnects."""

from __future__ import annotations

from collections.abc import AsyncIterator

from coordd.errors import UnavailableError
from coordd.v1 import common_pb2
from coordd.v1 import watch_service_pb2 as pb
from coordd.v1 import watch_service_pb2_grpc as pb_grpc

from . import _convert as cv
from ._core import Core
from ._models import ChangeEvent
from ._resume import Resumer


class AsyncWatch:
    def __init__(self, core: Core) -> None:
        self._core = core
        self._stub = pb_grpc.WatchServiceStub(core.channel)

    async def __call__(
        self,
        namespace: str,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        reconnect_for: float = 30.0,
    ) -> AsyncIterator[ChangeEvent]:
        """Change events in revision order per namespace, from *start_revision* (0: new only).

        Like every async generator, the watch starts at the first iteration: with
        ``start_revision=0`` it reports changes from then on. To miss nothing between a write
        and the watch, pass the revision to start from (e.g. ``response.revision + 1``).

        If the connection drops or the daemon stops (a restart, a rolling update), the watch
        resumes from the revision after the last one delivered, per namespace, trying for up
        to *reconnect_for* seconds: no gap, no duplicate. A compacted start raises
        RevisionCompactedError.
        """
        seen: dict[str, int] = {}  # namespace -> last revision delivered
        resumer = Resumer(self._core, reconnect_for)
        while True:
            request = pb.WatchRequest(
                namespace=namespace,
                prefix=prefix,
                start_revision=start_revision,
                after=common_pb2.VersionVector(revisions=seen),
            )
            try:
                async for resp in self._core.stream(self._stub.Watch, request):
                    resumer.delivered()
                    for msg in resp.events:
                        yield cv.change_event(msg)
                    for msg in resp.events:  # a revision's events all come in one response
                        seen[msg.namespace] = max(seen.get(msg.namespace, 0), msg.revision)
                return
            except UnavailableError as exc:
                if not await resumer.retry(exc):
                    raise
