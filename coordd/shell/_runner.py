"""The connection, and how every outcome becomes one line and an exit code."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc

from coordd.errors import CoorddError, UnavailableError
from coordd_client import AsyncClient, TLSConfig

from ._flags import (
    DEFAULT_AGENT_ID,
    FAILED,
    INTERRUPTED,
    NOT_ALLOWED,
    NOT_FOUND,
    OK,
    UNAVAILABLE,
    USAGE,
    NotFound,
    UsageError,
    target,
)

Command = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]


def _tls(args: argparse.Namespace) -> TLSConfig | None:
    if not (args.tls_ca or args.tls_cert or args.tls_key):
        return None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    for flag, path in (("--tls-ca", args.tls_ca), ("--tls-cert", args.tls_cert)):
        if path and not Path(path).is_file():
            raise UsageError(f"{flag} {path}: no such file")
    return TLSConfig(
        ca_file=str(args.tls_ca) if args.tls_ca else None,
        cert_file=str(args.tls_cert) if args.tls_cert else None,
        key_file=str(args.tls_key) if args.tls_key else None,
    )


async def connect(args: argparse.Namespace) -> AsyncClient:
    """Connect as the flags say (``async with await connect(args) as client``); an
    unreachable daemon is one UnavailableError naming the address."""
    addr = target(args)
    token_file = args.token_file or os.environ.get("COORDD_TOKEN_FILE") or None
    try:
        return await AsyncClient.connect(
            args.addr,  # None: the client's own discovery ($COORDD_ADDR, then the default)
            # With a token the token names the agent (a different name would be refused).
            agent_id=args.agent_id
            or os.environ.get("COORDD_AGENT_ID")
            or ("" if token_file else DEFAULT_AGENT_ID),
            role=args.role if args.role is not None else os.environ.get("COORDD_ROLE", ""),
            token_file=token_file,
            tls=_tls(args),
            timeout=args.timeout,
            connect_timeout=args.connect_timeout,
        )
    except ValueError as exc:  # an unreadable or empty token file
        raise UsageError(f"--token-file: {exc}") from None
    except UnavailableError:
        raise UnavailableError(
            f"could not reach coordd at {addr} within {args.connect_timeout:g}s "
            "(is `coordd serve` running? see --addr / COORDD_ADDR)"
        ) from None


def exit_code(exc: CoorddError) -> int:
    """The exit code for a coordd error (see the table in ``coordd.shell``)."""
    code = exc.code
    if getattr(exc, "code_name", "") == "UNIMPLEMENTED":
        return FAILED
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return USAGE
    if code is grpc.StatusCode.NOT_FOUND:
        return NOT_FOUND
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return UNAVAILABLE
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return NOT_ALLOWED
    return FAILED


def one_line(exc: CoorddError) -> str:
    """``coordd: CODE REASON: message`` (the reason left out where it repeats the code)."""
    # A status without coordd's details (UNIMPLEMENTED from an older daemon) keeps its own code.
    code = getattr(exc, "code_name", None) or exc.code.name
    reason = code if hasattr(exc, "code_name") else exc.reason
    label = code if reason == code else f"{code} {reason}"
    message = " ".join(str(exc.message).split())
    return f"coordd: {label}: {message}"


def fail(message: str) -> None:
    print(f"coordd: {message}", file=sys.stderr)


def execute(args: argparse.Namespace) -> int:
    """Run the parsed command against coordd and turn every outcome into an exit code."""
    command: Command = args.shell_run
    try:
        return asyncio.run(command(args))
    except UsageError as exc:
        fail(str(exc))
        return USAGE
    except NotFound as exc:
        fail(f"NOT_FOUND: {exc}")
        return NOT_FOUND
    except CoorddError as exc:
        print(one_line(exc), file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`coordd watch ns | head`): not an error of ours. Point stdout
        # at /dev/null so the interpreter's final flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return OK
