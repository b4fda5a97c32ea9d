"""Check that the daemon answers, and that each of its services is serving.

  coordd health                  exit 0 if every service is SERVING, 4 otherwise

Uses gRPC health checking (grpc.health.v1), which the daemon serves without credentials.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from . import _render as out
from ._flags import OK, UNAVAILABLE, add_connection_flags, connect, target

if TYPE_CHECKING:
    from coordd_client import AsyncClient

SERVICES = (
    "",  # the daemon as a whole
    "coordd.v1.ClaimService",
    "coordd.v1.IdempotencyService",
    "coordd.v1.MemoryService",
    "coordd.v1.ContextService",
    "coordd.v1.WatchService",
    "coordd.v1.AgreementService",
)


def configure(parser: argparse.ArgumentParser) -> None:
    add_connection_flags(parser)
    parser.set_defaults(shell_run=health)


async def _status(client: AsyncClient, service: str, timeout: float) -> str:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from coordd.rpc_status import from_rpc_error

    stub = health_pb2_grpc.HealthStub(client._core.channel)
    try:
        resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.NOT_FOUND:
            return "UNKNOWN_SERVICE"
        raise from_rpc_error(exc) from exc
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status))


async def health(args: argparse.Namespace) -> int:
    from coordd.errors import UnavailableError

    addr = target(args)
    started = time.monotonic()
    try:
        client = await connect(args)
    except UnavailableError as exc:
        if args.json:
            out.print_json({"address": addr, "healthy": False, "error": exc.message})
        raise
    async with client:
        statuses = {s: await _status(client, s, args.timeout) for s in SERVICES}
    took_ms = (time.monotonic() - started) * 1000
    healthy = all(v == "SERVING" for v in statuses.values())
    if args.json:
        out.print_json(
            {
                "address": addr,
                "healthy": healthy,
                "took_ms": round(took_ms, 1),
                "services": {s or "coordd": v for s, v in statuses.items()},
            }
        )
    else:
        verdict = "healthy" if healthy else "unhealthy"
        print(f"{addr} is {verdict}: took {took_ms:.1f} ms")
        out.print_table(("SERVICE", "STATUS"), [(s or "(daemon)", v) for s, v in statuses.items()])
    return OK if healthy else UNAVAILABLE
