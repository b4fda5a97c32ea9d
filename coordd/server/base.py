"""What every servicer shares: the policy check and the response header."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import grpc
from opentelemetry import trace

from coordd import audit
from coordd.domain.access import Operation, Policy
from coordd.domain.models import Identity
from coordd.errors import PermissionDeniedError
from coordd.server.interceptors import current_identity
from coordd.v1 import common_pb2

Ctx = grpc.aio.ServicerContext[Any, Any]
"""The context every RPC method receives."""

S = TypeVar("S")


class ServicerBase(Generic[S]):
    """A servicer over the domain service *S* that its RPCs call (``self._service``)."""

    def __init__(self, service: S, policy: Policy, server_id: str) -> None:
        self._service = service
        self._policy = policy
        self._server_id = server_id

    def authorize(self, op: Operation, namespace: str) -> Identity:
        """The caller, if a grant allows *op* on *namespace* (AIP-211: before validation)."""
        who = current_identity()
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(
                {
                    "coordd.namespace": namespace,
                    "coordd.agent_id": who.agent_id,
                    "coordd.operation": op.value,
                }
            )
        try:
            self._policy.check(who, op, namespace)
        except PermissionDeniedError:
            audit.record(audit.DENIED, who, namespace, operation=op.value)
            raise
        return who

    def authorize_subtree(self, op: Operation, namespace: str) -> Identity:
        """The caller, if a grant allows *op* on *namespace* and every namespace below it."""
        who = self.authorize(op, namespace)
        try:
            self._policy.check_subtree(who, op, namespace)
        except PermissionDeniedError:
            audit.record(audit.DENIED, who, namespace + "/**", operation=op.value)
            raise
        return who

    def header(self, namespace: str, revision: int) -> common_pb2.ResponseHeader:
        header = common_pb2.ResponseHeader()
        self.fill_header(header, namespace, revision)
        return header

    def fill_header(self, header: common_pb2.ResponseHeader, namespace: str, revision: int) -> None:
        """Write the response header into a response's ``header`` field in place (the hot RPCs
        build their responses this way: no header built, then copied into the response)."""
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("coordd.revision", revision)
        header.namespace = namespace
        header.revision = revision
        header.server_id = self._server_id
