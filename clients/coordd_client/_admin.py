"""Admin actions (callers with the ``admin`` grant): force-release a claim, purge a namespace."""

from __future__ import annotations

from coordd.v1 import admin_service_pb2 as pb
from coordd.v1 import admin_service_pb2_grpc as pb_grpc

from . import _convert as cv
from ._blocking import Face, blocking
from ._core import Service
from ._models import ForceReleaseResult, PurgeResult


class AsyncAdmin(Service):
    """``client.admin``: operator actions, each recorded in the change log and the audit log."""

    stub_class = pb_grpc.AdminServiceStub
    _stub: pb_grpc.AdminServiceAsyncStub

    async def force_release(
        self, namespace: str, resource: str, *, reason: str = ""
    ) -> ForceReleaseResult:
        """Release the claim on *resource* whoever holds it; its fencing token goes stale.

        Args:
            namespace: The claim's namespace (the caller needs ``admin`` on it).
            resource: The claimed resource.
            reason: Why, for the change log and the audit log (<= 1024 bytes).

        Returns:
            ``released`` False (and no claim) when nothing was held.
        """
        resp = await self._core.call(
            self._stub.ForceReleaseClaim,
            pb.ForceReleaseClaimRequest(namespace=namespace, resource=resource, reason=reason),
        )
        return cv.result(ForceReleaseResult, resp)

    async def purge_namespace(self, namespace: str, *, reason: str = "") -> PurgeResult:
        """Delete every claim, idempotency key, memory entry, context entry and agreement of
        *namespace* (not of namespaces below it). Its policy and revision count are kept.

        Args:
            namespace: The namespace to empty (the caller needs ``admin`` on it).
            reason: Why, for the change log and the audit log (<= 1024 bytes).
        """
        resp = await self._core.call(
            self._stub.PurgeNamespace, pb.PurgeNamespaceRequest(namespace=namespace, reason=reason)
        )
        return cv.result(PurgeResult, resp)


class Admin(Face[AsyncAdmin]):
    """Blocking ``client.admin``; see ``AsyncAdmin``."""

    force_release = blocking(AsyncAdmin.force_release)
    purge_namespace = blocking(AsyncAdmin.purge_namespace)
