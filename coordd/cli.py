"""The ``coordd`` command."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from coordd import __version__, shell
from coordd.config import ConfigError, Settings
from coordd.errors import StorageUnavailableError
from coordd.inject import cli as inject_cli


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coordd",
        description="coordd: claims, idempotency, memory and context for multi-agent systems.",
    )
    parser.add_argument("--version", action="version", version=f"coordd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="run the daemon",
        description="Run the coordd daemon. Without --dsn (or COORDD_DSN) it starts a private "
        "PostgreSQL in --data-dir. Flags override COORDD_* variables.",
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
        "--log-level",
        default=os.environ.get("COORDD_LOG_LEVEL", "info"),
        choices=("debug", "info", "warning", "error"),
        help="log level (env COORDD_LOG_LEVEL)",
    )
    mig = sub.add_parser("migrate", help="apply database migrations and exit")
    mig.add_argument("--dsn", help="PostgreSQL connection string (env COORDD_DSN)")
    inject_cli.register(sub)
    shell.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # The embedded PostgreSQL is managed with subprocesses; gRPC fork handlers only add noise.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    # gRPC's poller thread and the event loop hand the GIL back and forth on every call; the
    # default 5 ms switch interval shows up as latency (measured: a GetMemory 2.4 -> 1.9 ms).
    sys.setswitchinterval(float(os.environ.get("COORDD_SWITCH_INTERVAL", "0.001")))
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 2
    if hasattr(args, "run"):
        return int(args.run(args))
    if hasattr(args, "shell_run"):
        return shell.run(args)
    logging.basicConfig(
        level=getattr(logging, getattr(args, "log_level", "info").upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("pgserver", "psycopg.pool", "filelock", "fasteners"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        if args.command == "migrate":
            dsn = args.dsn or os.environ.get("COORDD_DSN")
            if not dsn:
                raise ConfigError("migrate needs --dsn or COORDD_DSN")
            from coordd.storage.migrate import migrate

            applied = asyncio.run(migrate(dsn))
            print("applied: " + (", ".join(applied) or "nothing (up to date)"))
            return 0
        settings = Settings.from_env(
            os.environ,
            listen=args.listen,
            dsn=args.dsn,
            data_dir=args.data_dir,
            auth=args.auth,
            policy_file=args.policy,
            grace_s=args.grace,
            audit_log=args.audit_log,
            tls_cert_file=args.tls_cert,
            tls_key_file=args.tls_key,
            tls_client_ca_file=args.tls_client_ca,
        )
        from coordd.server.app import Daemon

        asyncio.run(Daemon(settings).serve_forever())
        return 0
    except ConfigError as exc:
        print(f"coordd: {exc}", file=sys.stderr)
        return 2
    except StorageUnavailableError as exc:
        print(f"coordd: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
