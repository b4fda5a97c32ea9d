"""coordd_sidecar: a per-agent coordd proxy (``coordd-sidecar``).

It serves the same gRPC services as the daemon on a loopback port or a Unix socket, holds the
agent's credentials, keeps the agent's session (version vector), answers reads from a cache
that never goes below that session, forwards everything else as bytes, and traces.
"""

from .config import SidecarConfig
from .server import Sidecar

__all__ = ["Sidecar", "SidecarConfig"]
