"""The coordd RPC table, read from the generated descriptors (never written out by hand).

The sidecar and the session cache need, per method path (``/coordd.v1.MemoryService/GetMemory``):
its request and response classes, whether it streams, and for a request object, which method it
belongs to (one request type per RPC, by the project's naming rule). Every service in
``coordd.v1`` is here, including ones added after this module was written.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from functools import cache

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

import coordd.v1
from coordd.v1 import common_pb2


@dataclass(frozen=True, slots=True)
class Method:
    """One RPC: its full path, message classes and cardinality."""

    path: str
    service: str
    request: type[Message]
    response: type[Message]
    client_streaming: bool
    server_streaming: bool

    @property
    def unary(self) -> bool:
        return not (self.client_streaming or self.server_streaming)


@cache
def methods() -> dict[str, Method]:
    """Every coordd.v1 RPC by path."""
    out: dict[str, Method] = {}
    for info in pkgutil.iter_modules(coordd.v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"coordd.v1.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                path = f"/{service.full_name}/{m.name}"
                out[path] = Method(
                    path=path,
                    service=service.full_name,
                    request=message_factory.GetMessageClass(m.input_type),
                    response=message_factory.GetMessageClass(m.output_type),
                    client_streaming=m.client_streaming,
                    server_streaming=m.server_streaming,
                )
    return out


@cache
def _by_request() -> dict[str, Method]:
    return {m.request.DESCRIPTOR.full_name: m for m in methods().values()}


def method_of(request: Message) -> Method | None:
    """The RPC whose request type *request* is, or None."""
    return _by_request().get(request.DESCRIPTOR.full_name)


def service_names() -> list[str]:
    """Full names of every coordd.v1 service."""
    return sorted({m.service for m in methods().values()})


@cache
def header_envelope() -> type[Message]:
    """A message with only ``ResponseHeader header = 1``: parses any coordd response's header
    from its bytes without knowing its type (other fields are skipped)."""
    pool = descriptor_pool.Default()
    name = "coordd.v1.internal.HeaderEnvelope"
    try:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))
    except KeyError:
        pass
    f = descriptor_pb2.FileDescriptorProto(
        name="coordd/v1/internal/header_envelope.proto",
        package="coordd.v1.internal",
        syntax="proto3",
        dependency=[common_pb2.DESCRIPTOR.name],
    )
    msg = f.message_type.add(name="HeaderEnvelope")
    msg.field.add(
        name="header",
        number=1,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        type_name=".coordd.v1.ResponseHeader",
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL,
    )
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(name))


def header_of(raw: bytes) -> tuple[str, int]:
    """(namespace, revision) of a serialized coordd response's header; ("", 0) if none."""
    env = header_envelope().FromString(raw)
    header = env.header  # type: ignore[attr-defined]
    return str(header.namespace), int(header.revision)
