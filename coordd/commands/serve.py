"""``coordd serve``: run the daemon."""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from coordd.commands._server import add_log_level, server_command


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``serve`` to the ``coordd`` command."""
    serve = subparsers.add_parser(
        "serve",
        help="run the daemon",
        description="Run the coordd daemon. Without --dsn (or COORDD_DSN) it starts a private "
        "PostgreSQL in --data-dir. Flags override COORDD_* variables. SIGHUP reloads the "
        "--policy file (open connections are kept); SIGTERM stops gracefully.",
    )
    serve.add_argument("--listen", help="host:port (env COORDD_LISTEN, default 127.0.0.1:7420)")
    serve.add_argument("--dsn", help="PostgreSQL connection string (env COORDD_DSN)")
    serve.add_argument(
        "--data-dir",
        type=Path,
        help="embedded PostgreSQL data directory (env COORDD_DATA_DIR, "
        "default $XDG_DATA_HOME/coordd or ~/.local/share/coordd)",
    )
    serve.add_argument(
        "--auth", choices=("dev", "token", "mtls"), help="identity mode (env COORDD_AUTH)"
    )
    serve.add_argument("--policy", type=Path, help="TOML policy file (env COORDD_POLICY)")
    serve.add_argument("--tls-cert", type=Path, help="server certificate PEM (COORDD_TLS_CERT)")
    serve.add_argument("--tls-key", type=Path, help="server private key PEM (COORDD_TLS_KEY)")
    serve.add_argument(
        "--tls-client-ca", type=Path, help="CA of agent certificates, mtls (COORDD_TLS_CLIENT_CA)"
    )
    serve.add_argument(
        "--audit-log",
        type=Path,
        help="file for the audit trail, one JSON line per event (env COORDD_AUDIT_LOG)",
    )
    serve.add_argument("--grace", type=float, help="shutdown grace seconds (env COORDD_GRACE)")
    serve.add_argument(
        "--health-listen",
        help="host:port of a plaintext listener serving only gRPC health, for probes that "
        "cannot speak TLS such as the kubelet's (env COORDD_HEALTH_LISTEN)",
    )
    add_log_level(serve)
    serve.set_defaults(run=server_command(run))


def run(args: argparse.Namespace) -> int:
    """Build the settings from flags and environment, then serve until stopped."""
    from coordd.config import Settings
    from coordd.server.app import Daemon

    settings = Settings.from_env(
        os.environ,
        listen=args.listen,
        dsn=args.dsn,
        data_dir=args.data_dir,
        auth=args.auth,
        policy_file=args.policy,
        grace_s=args.grace,
        health_listen=args.health_listen,
        audit_log=args.audit_log,
        tls_cert_file=args.tls_cert,
        tls_key_file=args.tls_key,
        tls_client_ca_file=args.tls_client_ca,
    )
    asyncio.run(Daemon(settings).serve_forever())
    return 0
