"""Listening addresses: fail at once, in one line, when the daemon cannot listen.

gRPC reports a taken port as ``RuntimeError: Failed to bind to address ...; set
GRPC_VERBOSITY=debug ...`` after the daemon has started PostgreSQL and migrated; coordd checks
the address first (a plain socket bound the way gRPC binds it) and words the reason.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any

from coordd.config import ConfigError

_HINTS = {
    errno.EADDRINUSE: "another process listens there, perhaps another coordd: stop it or pass "
    "another --listen",
    errno.EADDRNOTAVAIL: "no interface of this host has that address",
    errno.EACCES: "ports below 1024 need privileges",
}


def _host_port(address: str) -> tuple[str, int] | None:
    """``host:port`` (``[v6]:port`` too) or None for forms gRPC resolves itself (``unix:``)."""
    if address.startswith(("unix:", "unix-abstract:", "vsock:")):
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def ensure_can_listen(address: str) -> None:
    """Raise ConfigError naming the reason if *address* cannot be listened on now.

    Port 0 (any free port) and non-TCP addresses always pass.
    """
    parsed = _host_port(address)
    if parsed is None or parsed[1] == 0:
        return
    host, port = parsed
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {address}: {exc.strerror}") from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As gRPC binds: SO_REUSEADDR, so only a live listener (not TIME_WAIT) is a conflict.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
            probe.listen(1)
        except OSError as exc:
            raise ConfigError(_explain(address, exc)) from None


def bind(add_port: Callable[..., int], address: str, *args: Any) -> int:
    """Call ``server.add_*_port(address, ...)``, turning its failure into a ConfigError."""
    try:
        port = add_port(address, *args)
    except RuntimeError:  # a race with another process after ensure_can_listen
        port = 0
    if port == 0:
        raise ConfigError(f"cannot listen on {address}: address already in use or unavailable")
    return port


def _explain(address: str, exc: OSError) -> str:
    reason = (exc.strerror or str(exc)).lower()
    hint = _HINTS.get(exc.errno or 0)
    return f"cannot listen on {address}: {reason}" + (f" ({hint})" if hint else "")
