"""The ``coordd inject`` and ``coordd inject-webhook`` subcommands."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordd.commands._server import add_log_level

if TYPE_CHECKING:
    from coordd.inject.config import InjectConfig


def register(sub: Any) -> None:
    """Add ``inject`` and ``inject-webhook`` to the ``coordd`` subcommands."""
    inject = sub.add_parser(
        "inject",
        help="add the coordd sidecar to Kubernetes manifests (like linkerd inject)",
        description="Read Kubernetes manifests (Pods, Deployments, StatefulSets, DaemonSets, "
        "Jobs, CronJobs, Lists; several YAML documents) and write them to stdout with the "
        'coordd sidecar injected into every pod annotated coordd.io/inject: "true", exactly '
        "as the admission webhook would. What happened to each object goes to stderr. "
        "Example: coordd inject -f agent.yaml | kubectl apply -f -",
    )
    inject.add_argument(
        "-f", "--filename", required=True, help="manifest file, or - for standard input"
    )
    _injection_flags(inject)
    inject.set_defaults(run=run_inject)

    hook = sub.add_parser(
        "inject-webhook",
        help="serve the sidecar-injecting admission webhook over HTTPS",
        description="Serve the mutating admission webhook (POST /mutate, AdmissionReview v1; "
        'GET /healthz) over HTTPS. Pods annotated coordd.io/inject: "true" get the sidecar. '
        "The certificate is re-read when its file changes. Its OTEL_* variables are passed "
        "on to sidecars and agents.",
    )
    hook.add_argument(
        "--listen",
        default=os.environ.get("COORDD_WEBHOOK_LISTEN", "0.0.0.0:8443"),
        help="host:port (env COORDD_WEBHOOK_LISTEN, default 0.0.0.0:8443)",
    )
    hook.add_argument(
        "--tls-cert",
        type=Path,
        default=_env_path("COORDD_WEBHOOK_TLS_CERT"),
        help="certificate chain PEM (env COORDD_WEBHOOK_TLS_CERT); required",
    )
    hook.add_argument(
        "--tls-key",
        type=Path,
        default=_env_path("COORDD_WEBHOOK_TLS_KEY"),
        help="private key PEM (env COORDD_WEBHOOK_TLS_KEY); required",
    )
    add_log_level(hook)
    _injection_flags(hook)
    hook.set_defaults(run=run_webhook)


def _injection_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("what injected pods get (flags override variables)")
    group.add_argument("--sidecar-image", help="sidecar image (env COORDD_SIDECAR_IMAGE)")
    group.add_argument(
        "--upstream",
        help="daemon host:port the sidecars dial (env COORDD_UPSTREAM, "
        "default coordd.coordd.svc.cluster.local:7420)",
    )
    group.add_argument(
        "--sidecar-cpu", help="default sidecar CPU request (env COORDD_SIDECAR_CPU, 100m)"
    )
    group.add_argument(
        "--sidecar-memory",
        help="default sidecar memory request and limit (env COORDD_SIDECAR_MEMORY, 128Mi)",
    )


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def _config(args: argparse.Namespace) -> InjectConfig:
    from coordd.inject.config import InjectConfig

    return InjectConfig.from_env(
        os.environ,
        sidecar_image=args.sidecar_image,
        upstream=args.upstream,
        default_cpu=args.sidecar_cpu,
        default_memory=args.sidecar_memory,
    )


def run_inject(args: argparse.Namespace) -> int:
    """``coordd inject``: manifests in, injected manifests on stdout."""
    from coordd.inject.offline import InjectError, inject_text

    try:
        config = _config(args)
        if args.filename == "-":
            text = sys.stdin.read()
        else:
            text = Path(args.filename).read_text(encoding="utf-8")
        output, reports = inject_text(text, config)
    except OSError as exc:
        print(f"coordd inject: cannot read {args.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    except (InjectError, ValueError) as exc:
        print(f"coordd inject: {exc}", file=sys.stderr)
        return 1
    for report in reports:
        print(f"{report.object} {report.outcome}", file=sys.stderr)
        for warning in report.warnings:
            print(f"  warning: {warning}", file=sys.stderr)
    sys.stdout.write(output)
    return 0


def run_webhook(args: argparse.Namespace) -> int:
    """``coordd inject-webhook``: serve until SIGTERM or SIGINT."""
    from coordd.inject.webhook import WebhookServer

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    host, _, port = args.listen.rpartition(":")
    problems = []
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        problems.append(f"listen address {args.listen!r} must be host:port")
    if args.tls_cert is None or args.tls_key is None:
        problems.append("--tls-cert and --tls-key are required (the API server calls HTTPS)")
    try:
        config = _config(args)
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        print("coordd inject-webhook: " + "; ".join(problems), file=sys.stderr)
        return 2
    try:
        server = WebhookServer((host.strip("[]"), int(port)), args.tls_cert, args.tls_key, config)
    except OSError as exc:
        print(
            f"coordd inject-webhook: cannot listen on {args.listen} or read the certificate: {exc}",
            file=sys.stderr,
        )
        return 1

    def stop(signum: int, frame: Any) -> None:
        # shutdown() waits for serve_forever, which runs in this (the main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logging.getLogger("coordd.inject").info(
        "coordd inject-webhook on https://%s:%d/mutate (sidecar %s, upstream %s)",
        host,
        server.port,
        config.sidecar_image,
        config.upstream,
    )
    with server:
        server.serve_forever()
    return 0
