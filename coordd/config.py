"""Daemon settings: one frozen dataclass, built once from flags and COORDD_* environment."""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """Settings that cannot work; the message lists every problem found."""


class StartupError(RuntimeError):
    """The daemon failed to start for a reason nobody anticipated; the message is one line.

    The traceback goes to the log at DEBUG (``--log-level debug``).
    """


def default_data_dir(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "coordd"


def _server_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything ``coordd serve`` needs. Field docs name the flag and the variable."""

    listen: str = "127.0.0.1:7420"
    """--listen / COORDD_LISTEN: host:port to serve gRPC on (port 0 picks a free one)."""
    dsn: str | None = None
    """--dsn / COORDD_DSN: PostgreSQL >= 14 to use; unset starts the embedded one."""
    data_dir: Path = field(default_factory=lambda: default_data_dir(os.environ))
    """--data-dir / COORDD_DATA_DIR: where the embedded PostgreSQL keeps its data."""
    auth: str = "dev"
    """--auth / COORDD_AUTH: "dev" (identity from metadata, loopback only) or "token"."""
    policy_file: Path | None = None
    """--policy / COORDD_POLICY: TOML file with tokens (hashes) and grants."""
    tls_cert_file: Path | None = None
    """--tls-cert / COORDD_TLS_CERT: server certificate chain (PEM); enables TLS."""
    tls_key_file: Path | None = None
    """--tls-key / COORDD_TLS_KEY: the certificate's private key (PEM)."""
    tls_client_ca_file: Path | None = None
    """--tls-client-ca / COORDD_TLS_CLIENT_CA: CA that signs agent certificates (mtls mode)."""
    audit_log: Path | None = None
    """--audit-log / COORDD_AUDIT_LOG: file that receives the audit trail (one JSON line per
    denial, authentication failure or admin action); unset: the daemon's own log."""
    grace_s: float = 10.0
    """--grace / COORDD_GRACE: seconds in-flight calls get to finish at shutdown."""
    pool_min: int = 2
    """COORDD_POOL_MIN: minimum PostgreSQL connections."""
    pool_max: int = 16
    """COORDD_POOL_MAX: maximum PostgreSQL connections."""
    pool_timeout_s: float = 10.0
    """COORDD_POOL_TIMEOUT: seconds a call waits for a PostgreSQL connection before
    failing with UNAVAILABLE / STORAGE_UNAVAILABLE."""
    index_dir: Path | None = None
    """COORDD_INDEX_DIR: where the vector index snapshot is kept between runs (default:
    <data-dir>/index with the embedded PostgreSQL; unset with --dsn: rebuilt at start)."""
    changelog_retention_s: float = 86400.0
    """COORDD_CHANGELOG_RETENTION: seconds change-log rows are kept for Watch (default 24 h)."""
    sweep_interval_s: float = 1.0
    """COORDD_SWEEP_INTERVAL: seconds between sweeps of expired claims and keys."""
    max_message_bytes: int = 4 << 20
    """COORDD_MAX_MESSAGE_BYTES: largest gRPC message accepted or sent."""
    health_listen: str | None = None
    """COORDD_HEALTH_LISTEN: host:port of a second, plaintext listener that serves only
    grpc.health.v1 (no data, no credentials), for probes that cannot speak TLS, such as the
    kubelet's gRPC probes; unset: none. It may listen beyond loopback."""
    reflection: bool = True
    """COORDD_REFLECTION: serve gRPC reflection (1/0)."""
    session_stream: bool = True
    """COORDD_SESSION_STREAM: serve SessionService, unary calls on one stream (1/0)."""
    grpc_wake_drain: bool = True
    """COORDD_GRPC_WAKE_DRAIN: run grpc.aio's completions that arrive together in one event
    loop iteration (1/0; see coordd_client._grpc_wakeups)."""
    server_id: str = field(default_factory=_server_id)
    """COORDD_SERVER_ID: id reported in every response header."""

    def __repr__(self) -> str:  # the DSN may carry a password
        shown = {f: getattr(self, f) for f in self.__dataclass_fields__}
        if self.dsn:
            shown["dsn"] = "<redacted>"
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Build from COORDD_* variables, then apply non-None *overrides* (flags)."""
        problems: list[str] = []
        values: dict[str, Any] = {"data_dir": default_data_dir(environ)}
        text = {
            "listen": "COORDD_LISTEN",
            "dsn": "COORDD_DSN",
            "auth": "COORDD_AUTH",
            "server_id": "COORDD_SERVER_ID",
            "health_listen": "COORDD_HEALTH_LISTEN",
        }
        for name, var in text.items():
            if environ.get(var):
                values[name] = environ[var]
        for name, var in (
            ("data_dir", "COORDD_DATA_DIR"),
            ("policy_file", "COORDD_POLICY"),
            ("tls_cert_file", "COORDD_TLS_CERT"),
            ("tls_key_file", "COORDD_TLS_KEY"),
            ("tls_client_ca_file", "COORDD_TLS_CLIENT_CA"),
            ("index_dir", "COORDD_INDEX_DIR"),
            ("audit_log", "COORDD_AUDIT_LOG"),
        ):
            if environ.get(var):
                values[name] = Path(environ[var])
        numbers: dict[str, tuple[str, type]] = {
            "grace_s": ("COORDD_GRACE", float),
            "pool_min": ("COORDD_POOL_MIN", int),
            "pool_max": ("COORDD_POOL_MAX", int),
            "sweep_interval_s": ("COORDD_SWEEP_INTERVAL", float),
            "pool_timeout_s": ("COORDD_POOL_TIMEOUT", float),
            "changelog_retention_s": ("COORDD_CHANGELOG_RETENTION", float),
            "max_message_bytes": ("COORDD_MAX_MESSAGE_BYTES", int),
        }
        for name, (var, kind) in numbers.items():
            if environ.get(var):
                try:
                    values[name] = kind(environ[var])
                except ValueError:
                    problems.append(f"{var}={environ[var]!r} is not a number")
        flags = {
            "reflection": "COORDD_REFLECTION",
            "session_stream": "COORDD_SESSION_STREAM",
            "grpc_wake_drain": "COORDD_GRPC_WAKE_DRAIN",
        }
        for flag, var in flags.items():
            if environ.get(var):
                values[flag] = environ[var].strip().lower() not in ("0", "false", "no", "off")
        values.update({k: v for k, v in overrides.items() if v is not None})
        if problems:
            raise ConfigError("; ".join(problems))
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        problems = []
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            problems.append(f"listen address {self.listen!r} must be host:port")
        elif not is_loopback(host) and (self.auth == "dev" or not self.tls):
            problems.append(
                f"refusing to listen on {host} without credentials over TLS: dev mode and "
                "plaintext are loopback only (use --auth token or mtls with --tls-cert and "
                "--tls-key, or listen on 127.0.0.1)"
            )
        if self.health_listen is not None:
            h_host, _, h_port = self.health_listen.rpartition(":")
            if not h_host or not h_port.isdigit() or not 0 <= int(h_port) <= 65535:
                problems.append(f"health listen address {self.health_listen!r} must be host:port")
        if self.auth not in ("dev", "token", "mtls"):
            problems.append(f"auth mode {self.auth!r} must be 'dev', 'token' or 'mtls'")
        if self.auth == "token" and self.policy_file is None:
            problems.append("--auth token needs --policy FILE (tokens and grants)")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            problems.append("--tls-cert and --tls-key go together")
        if self.auth == "mtls" and (not self.tls or self.tls_client_ca_file is None):
            problems.append("--auth mtls needs --tls-cert, --tls-key and --tls-client-ca")
        if self.pool_min < 1 or self.pool_max < self.pool_min:
            problems.append("pool sizes must satisfy 1 <= COORDD_POOL_MIN <= COORDD_POOL_MAX")
        if self.grace_s < 0 or self.sweep_interval_s <= 0:
            problems.append("grace must be >= 0 and sweep interval > 0")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None and self.tls_key_file is not None

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
