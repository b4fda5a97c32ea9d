"""Watch: a namespace's change log as a stream, resumed by itself after disconnects."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from coordd.v1 import common_pb2
from coordd.v1 import watch_service_pb2 as pb
from coordd.v1 import watch_service_pb2_grpc as pb_grpc

from . import _convert as cv
from ._blocking import Face, blocking_iter
from ._core import Service
from ._models import ChangeEvent
from ._resume import Resumer


class AsyncWatch(Service):
    stub_class = pb_grpc.WatchServiceStub
    _stub: pb_grpc.WatchServiceAsyncStub

    async def __call__(
        self,
        namespace: str,
        *,
        prefix: bool = False,
        start_revision: int = 0,
        until_revision: int | None = None,
        reconnect_for: float = 30.0,
    ) -> AsyncIterator[ChangeEvent]:
        """Change events in revision order per namespace, from *start_revision* (0: new only).

        Like every async generator, the watch starts at the first iteration: with
        ``start_revision=0`` it reports changes from then on. To miss nothing between a write
        and the watch, pass the revision to start from (e.g. ``response.revision + 1``).

        With *until_revision* the watch ends once that revision has been delivered (at once if
        it is below *start_revision*): ``watch(ns, start_revision=1,
        until_revision=client.session.vector.get(ns, 0))`` replays the log up to what this
        client has seen, and stops. Unset, it follows until closed. One namespace only (not
        with *prefix*, whose namespaces count revisions apart).

        If the connection drops or the daemon stops (a restart, a rolling update), the watch
        resumes from the revision after the last one delivered, per namespace, trying for up
        to *reconnect_for* seconds: no gap, no duplicate. A compacted start raises
        RevisionCompactedError.
        """
        if until_revision is not None:
            if prefix:
                raise ValueError("until_revision applies to one namespace, not with prefix=True")
            if until_revision < max(start_revision, 1):
                return
        seen: dict[str, int] = {}  # namespace -> last revision delivered

        def request() -> pb.WatchRequest:
            return pb.WatchRequest(
                namespace=namespace,
                prefix=prefix,
                start_revision=start_revision,
                after=common_pb2.VersionVector(revisions=seen),
            )

        stream = Resumer(self._core, reconnect_for).follow(self._stub.Watch, request)
        async with contextlib.aclosing(stream) as responses:
            async for resp in responses:
                for msg in resp.events:
                    if until_revision is not None and msg.revision > until_revision:
                        return
                    yield cv.change_event(msg)
                for msg in resp.events:  # a revision's events all come in one response
                    seen[msg.namespace] = max(seen.get(msg.namespace, 0), msg.revision)
                if until_revision is not None and seen.get(namespace, 0) >= until_revision:
                    return


class Watch(Face[AsyncWatch]):
    """Blocking ``client.watch``: ``for event in client.watch(namespace)``; see
    ``AsyncWatch.__call__``."""

    __call__ = blocking_iter(AsyncWatch.__call__)
