"""Sidecar settings: one frozen dataclass, built once from flags and COORDD_* environment."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from coordd.config import ConfigError, is_loopback
from coordd_client import CacheConfig

DEFAULT_LISTEN = "127.0.0.1:7420"


@dataclass(frozen=True, slots=True, kw_only=True)
class SidecarConfig:
    """Everything ``coordd-sidecar`` needs. Field docs name the flag and the variable."""

    upstream: str
    """--upstream / COORDD_UPSTREAM: the daemon (or its Service), host:port."""
    listen: str = DEFAULT_LISTEN
    """--listen / COORDD_LISTEN: ``unix:///path.sock`` or a loopback ``host:port`` (port 0
    picks a free one). Nothing else: the sidecar acts with the agent's credentials."""
    agent_id: str = ""
    """--agent-id / COORDD_AGENT_ID: the agent this sidecar acts for (dev-mode daemons)."""
    role: str = ""
    """--role / COORDD_AGENT_ROLE: that agent's role (dev-mode daemons)."""
    token_file: Path | None = None
    """--token-file / COORDD_TOKEN_FILE: bearer token for token-mode daemons (read at start)."""
    tls_ca: Path | None = None
    """--tls-ca / COORDD_TLS_CA: CA that signs the daemon's certificate (TLS upstream)."""
    tls_cert: Path | None = None
    """--tls-cert / COORDD_TLS_CERT: this agent's client certificate (mtls daemons)."""
    tls_key: Path | None = None
    """--tls-key / COORDD_TLS_KEY: its private key."""
    tls_server_name: str = ""
    """--tls-server-name / COORDD_TLS_SERVER_NAME: name to check in the daemon's certificate
    (when it differs from the upstream host)."""
    cache: CacheConfig = field(default_factory=CacheConfig)
    """--cache-bytes / COORDD_SIDECAR_CACHE_BYTES (0 turns the cache off)."""
    grace_s: float = 5.0
    """--grace / COORDD_GRACE: seconds in-flight calls get to finish at shutdown."""

    @property
    def tls(self) -> bool:
        return self.tls_ca is not None or self.tls_cert is not None

    def validate(self) -> None:
        problems = []
        host, _, port = self.upstream.rpartition(":")
        if not host or not port.isdigit():
            problems.append(f"--upstream {self.upstream!r} must be host:port")
        problems += listen_problems(self.listen)
        if not self.agent_id and self.token_file is None and self.tls_cert is None:
            problems.append(
                "the sidecar needs the agent's identity: --agent-id (dev-mode daemon), "
                "--token-file (token mode) or --tls-cert/--tls-key (mtls)"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            problems.append("--tls-cert and --tls-key go together")
        for name, path in (
            ("--token-file", self.token_file),
            ("--tls-ca", self.tls_ca),
            ("--tls-cert", self.tls_cert),
            ("--tls-key", self.tls_key),
        ):
            if path is not None and not path.is_file():
                problems.append(f"{name} {str(path)!r} is not a readable file")
        if problems:
            raise ConfigError("; ".join(problems))


def listen_problems(listen: str) -> list[str]:
    """Why *listen* is refused: the sidecar serves only loopback and Unix sockets."""
    if listen.startswith("unix:"):
        return [] if listen.removeprefix("unix://").removeprefix("unix:") else ["empty socket path"]
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        return [f"--listen {listen!r} must be unix:///path.sock or 127.0.0.1:PORT"]
    if not is_loopback(host):
        return [
            f"refusing to listen on {host}: the sidecar holds the agent's credentials, so it "
            "listens only on loopback (127.0.0.1, [::1]) or a Unix socket"
        ]
    return []


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="coordd-sidecar",
        description="Per-agent coordd proxy: the same API as the daemon, the agent's "
        "credentials, a read cache that never answers below the agent's session, and tracing. "
        "Flags override COORDD_* variables.",
    )
    p.add_argument("--upstream", help="daemon host:port (env COORDD_UPSTREAM)")
    p.add_argument(
        "--listen",
        help=f"unix:///path.sock or 127.0.0.1:PORT (env COORDD_LISTEN, default {DEFAULT_LISTEN})",
    )
    p.add_argument("--agent-id", help="agent id, dev-mode daemons (env COORDD_AGENT_ID)")
    p.add_argument("--role", help="agent role, dev-mode daemons (env COORDD_AGENT_ROLE)")
    p.add_argument("--token-file", type=Path, help="bearer token file (env COORDD_TOKEN_FILE)")
    p.add_argument("--tls-ca", type=Path, help="CA of the daemon's certificate (COORDD_TLS_CA)")
    p.add_argument("--tls-cert", type=Path, help="client certificate, mtls (COORDD_TLS_CERT)")
    p.add_argument("--tls-key", type=Path, help="client private key, mtls (COORDD_TLS_KEY)")
    p.add_argument("--tls-server-name", help="expected daemon certificate name")
    p.add_argument(
        "--cache-bytes",
        type=int,
        help="read cache size in bytes, 0 = off (env COORDD_SIDECAR_CACHE_BYTES, default 64 MiB)",
    )
    p.add_argument("--grace", type=float, help="shutdown grace seconds (env COORDD_GRACE)")
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="log level (env COORDD_LOG_LEVEL, default info)",
    )
    # Test-only negative control for the history checker: serve cached answers without the
    # version check. Never use it: it breaks read-your-writes on purpose.
    p.add_argument("--unsafe-skip-version-checks", action="store_true", help=argparse.SUPPRESS)
    return p


def from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> SidecarConfig:
    """Build and validate the config from parsed flags over COORDD_* variables."""

    def pick(flag: object, var: str, default: str = "") -> str:
        return str(flag) if flag is not None else environ.get(var, default)

    def path(flag: Path | None, var: str) -> Path | None:
        return flag if flag is not None else (Path(environ[var]) if environ.get(var) else None)

    upstream = pick(args.upstream, "COORDD_UPSTREAM")
    if not upstream:
        raise ConfigError("--upstream (or COORDD_UPSTREAM) is required: the daemon's host:port")
    try:
        cache_bytes = int(pick(args.cache_bytes, "COORDD_SIDECAR_CACHE_BYTES", str(64 << 20)))
        grace = float(pick(args.grace, "COORDD_GRACE", "5"))
    except ValueError as exc:
        raise ConfigError(f"not a number: {exc}") from None
    if cache_bytes < 0:
        raise ConfigError("--cache-bytes must be >= 0 (0 turns the cache off)")
    config = SidecarConfig(
        upstream=upstream,
        listen=pick(args.listen, "COORDD_LISTEN", DEFAULT_LISTEN),
        agent_id=pick(args.agent_id, "COORDD_AGENT_ID"),
        role=pick(args.role, "COORDD_AGENT_ROLE"),
        token_file=path(args.token_file, "COORDD_TOKEN_FILE"),
        tls_ca=path(args.tls_ca, "COORDD_TLS_CA"),
        tls_cert=path(args.tls_cert, "COORDD_TLS_CERT"),
        tls_key=path(args.tls_key, "COORDD_TLS_KEY"),
        tls_server_name=pick(args.tls_server_name, "COORDD_TLS_SERVER_NAME"),
        cache=CacheConfig(
            max_bytes=cache_bytes, _skip_version_checks=args.unsafe_skip_version_checks
        ),
        grace_s=grace,
    )
    config.validate()
    return config
