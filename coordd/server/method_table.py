"""Every service's method handlers in one table, served as one generic handler.

The generated ``add_<Service>Servicer_to_server`` functions also *register* each method with
the server. grpc.aio then keeps one pending request future per registered method and, on every
turn of its accept loop, ``asyncio.wait``s on all of them: with coordd's ~40 methods that is
~40 callbacks added, removed and scanned for each batch of incoming calls, on the event loop,
whatever the method. Measured with the bare echo server (bench/_echo.py) at 32 clients: 168-193
µs of server CPU per unary call without registered methods, 225-227 µs with 40 of them.

A :class:`MethodTable` stands in for the server when the services are added: it keeps their
handlers by full method name and is then added to the server as ONE generic handler, so the
server waits on one future and finds a method with one dict lookup. Handlers, interceptors and
errors are exactly those of the registered path; a method nobody added is UNIMPLEMENTED as
before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:  # the stubs make it generic; the runtime class is not subscriptable
    _GenericHandler = grpc.GenericRpcHandler[Any, Any]
else:
    _GenericHandler = grpc.GenericRpcHandler


class MethodTable(_GenericHandler):
    """Collects method handlers (``add_*_to_server(servicer, table)``), then serves them as one
    generic handler (``server.add_generic_rpc_handlers((table,))``)."""

    def __init__(self) -> None:
        self._methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
        self._generic: list[_GenericHandler] = []

    @property
    def methods(self) -> Mapping[str, grpc.RpcMethodHandler[Any, Any]]:
        """The handlers added, by full method name (``/coordd.v1.ClaimService/AcquireClaim``)."""
        return self._methods

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        """What generated code calls to register *service_name*'s methods: kept here instead."""
        for method, handler in method_handlers.items():
            self._methods[f"/{service_name}/{method}"] = handler

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[_GenericHandler]) -> None:
        """Generic handlers are consulted for methods not in the table (generated code adds
        one per service beside the registered methods: those are never reached)."""
        self._generic.extend(generic_rpc_handlers)

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = self._methods.get(handler_call_details.method)
        if handler is not None:
            return handler
        for generic in self._generic:
            if (handler := generic.service(handler_call_details)) is not None:
                return handler
        return None
