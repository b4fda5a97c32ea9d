"""The ``coordd-sidecar`` command."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from coordd import telemetry
from coordd.config import ConfigError

from .config import from_args, parser
from .server import Sidecar


async def _serve(sidecar: Sidecar) -> None:
    await sidecar.start()
    # One line on stdout with the bound address, for supervisors and tests using port 0.
    print(f"coordd-sidecar listening on {sidecar.address}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await sidecar.stop()
    if sidecar.cache is not None:
        st = sidecar.cache.stats
        print(
            f"coordd-sidecar cache hits={st.hits} misses={st.misses} "
            f"session_forced={st.session_forced} invalidations={st.invalidations} "
            f"evictions={st.evictions} stale_served={st.stale_served}",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    sys.setswitchinterval(float(os.environ.get("COORDD_SWITCH_INTERVAL", "0.001")))
    args = parser().parse_args(argv)
    level = args.log_level or os.environ.get("COORDD_LOG_LEVEL", "info")
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = from_args(args, os.environ)
    except ConfigError as exc:
        print(f"coordd-sidecar: {exc}", file=sys.stderr)
        return 2
    telemetry.setup_tracing("coordd-sidecar", os.environ)
    try:
        asyncio.run(_serve(Sidecar(config)))
    except ConfigError as exc:  # the listen address is taken or unavailable
        print(f"coordd-sidecar: {exc}", file=sys.stderr)
        return 1
    return 0
