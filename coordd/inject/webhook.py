"""``coordd inject-webhook``: the mutating admission webhook, served over HTTPS by coordd itself.

The API server POSTs an ``admission.k8s.io/v1`` ``AdmissionReview`` to ``/mutate`` for every pod
created in a namespace the ``MutatingWebhookConfiguration`` selects. The answer echoes the
request's ``uid`` and carries the JSON patch of :func:`coordd.inject.patch.plan_injection`
(``patchType: JSONPatch``), or ``allowed: false`` with a message naming the bad annotation.
``/healthz`` answers 200 for the kubelet's probes.

Standard library only (``http.server`` and ``ssl``), so the webhook runs from the base install.
The certificate and key are re-read when their files change, so a rotated Secret (cert-manager,
or ``kubectl create secret tls --dry-run=client -o yaml | kubectl apply``) is picked up without a
restart.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socket import socket
from typing import Any

from coordd.inject.annotations import AnnotationError
from coordd.inject.config import InjectConfig
from coordd.inject.patch import Json, plan_injection

logger = logging.getLogger(__name__)

MAX_REVIEW_BYTES = 8 << 20
"""Largest request body accepted; the API server's own request limit is 3 MiB."""


class BadReviewError(ValueError):
    """The request body is not an ``admission.k8s.io/v1`` AdmissionReview."""


def review(body: bytes, config: InjectConfig) -> Json:
    """Answer one AdmissionReview (the whole webhook, without HTTP).

    Args:
        body: the JSON request body the API server sent.
        config: the injector's settings.

    Returns:
        The AdmissionReview response object.

    Raises:
        BadReviewError: the body is not an AdmissionReview v1 with a request.
    """
    try:
        message = json.loads(body)
    except ValueError:
        raise BadReviewError("body is not JSON") from None
    if not isinstance(message, dict) or message.get("kind") != "AdmissionReview":
        raise BadReviewError("body is not an AdmissionReview")
    if message.get("apiVersion") != "admission.k8s.io/v1":
        raise BadReviewError(
            f"apiVersion {message.get('apiVersion')!r} is not supported: use admission.k8s.io/v1"
        )
    request = message.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise BadReviewError("AdmissionReview has no request.uid")
    response: Json = {"uid": request["uid"], "allowed": True}
    pod = request.get("object")
    is_pod_create = (
        request.get("operation") == "CREATE"
        and (request.get("kind") or {}).get("kind") == "Pod"
        and isinstance(pod, dict)
    )
    where = f"{request.get('namespace', '')}/{_pod_name(pod)}"
    if is_pod_create:
        assert isinstance(pod, dict)
        try:
            injection = plan_injection(pod, config)
        except AnnotationError as exc:
            logger.info("refused pod %s: %s", where, exc)
            response["allowed"] = False
            response["status"] = {
                "code": HTTPStatus.UNPROCESSABLE_ENTITY,
                "reason": "Invalid",
                "message": f"coordd sidecar injection: {exc}",
            }
        else:
            logger.info("pod %s: %s", where, injection.outcome)
            if injection.patch:
                response["patchType"] = "JSONPatch"
                response["patch"] = base64.b64encode(
                    json.dumps(injection.patch, separators=(",", ":")).encode()
                ).decode()
            if injection.warnings:
                response["warnings"] = injection.warnings
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}


def _pod_name(pod: Any) -> str:
    metadata = pod.get("metadata") if isinstance(pod, dict) else None
    if not isinstance(metadata, dict):
        return "<unnamed>"
    return str(metadata.get("name") or (metadata.get("generateName", "") + "<generated>"))


class _CertificateFiles:
    """A server TLS context rebuilt whenever the certificate or key file changes."""

    def __init__(self, cert: Path, key: Path) -> None:
        self._cert, self._key = cert, key
        self._lock = threading.Lock()
        self._stamp: tuple[float, float] | None = None
        self._context = self.context()  # fails now, at start, if the files are unusable

    def context(self) -> ssl.SSLContext:
        stamp = (self._cert.stat().st_mtime, self._key.stat().st_mtime)
        with self._lock:
            if stamp != self._stamp:
                context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
                context.minimum_version = ssl.TLSVersion.TLSv1_2
                context.load_cert_chain(self._cert, self._key)
                self._context, self._stamp = context, stamp
                logger.info("loaded TLS certificate %s", self._cert)
            return self._context


class WebhookServer(ThreadingHTTPServer):
    """The HTTPS server: ``POST /mutate`` and ``GET /healthz``.

    Each accepted connection is wrapped with the current certificate; the TLS handshake runs in
    the connection's own thread, so one slow client cannot stall the others.
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], cert: Path, key: Path, config: InjectConfig):
        self.config = config
        self._certificates = _CertificateFiles(cert, key)
        super().__init__(address, _Handler)

    @property
    def port(self) -> int:
        """The port listened on (useful with port 0)."""
        return int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that drops the connection or fails the handshake is not the server's error.
        logger.debug("connection from %s failed", client_address, exc_info=True)

    def get_request(self) -> tuple[socket, Any]:
        sock, address = super().get_request()
        context = self._certificates.context()
        return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address


class _Handler(BaseHTTPRequestHandler):
    server: WebhookServer
    protocol_version = "HTTP/1.1"
    # The API server keeps connections open; a silent peer must not hold a thread forever.
    timeout = 30

    def do_GET(self) -> None:
        if self.path in ("/healthz", "/readyz"):
            self._send(HTTPStatus.OK, b"ok\n", "text/plain")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found: use POST /mutate\n", "text/plain")

    def do_POST(self) -> None:
        if self.path.partition("?")[0] != "/mutate":
            self._send(HTTPStatus.NOT_FOUND, b"not found: use POST /mutate\n", "text/plain")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_REVIEW_BYTES:
            self._send(HTTPStatus.BAD_REQUEST, b"need a JSON body up to 8 MiB\n", "text/plain")
            return
        try:
            answer = review(self.rfile.read(length), self.server.config)
        except BadReviewError as exc:
            self._send(HTTPStatus.BAD_REQUEST, f"{exc}\n".encode(), "text/plain")
            return
        self._send(HTTPStatus.OK, json.dumps(answer).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)
