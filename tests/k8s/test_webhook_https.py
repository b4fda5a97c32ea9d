"""``coordd inject-webhook`` over HTTPS, called the way the API server calls it: POST /mutate to
the Service's DNS name, verified against the caBundle, AdmissionReview v1 in and out."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from coordd.inject.webhook import WebhookServer
from tests.k8s.certs import self_signed
from tests.k8s.kube import NEWEST, validate
from tests.k8s.test_injection import CONFIG, admission_review, config_environment, make_pod

SERVICE = "coordd-injector.coordd.svc"
WEBHOOK = [sys.executable, "-m", "coordd", "inject-webhook", "--listen", "127.0.0.1:0"]


def write_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for the webhook Service (it is its own caBundle)."""
    return self_signed(folder, SERVICE)


class ApiServerConnection(http.client.HTTPSConnection):
    """Dials an address but verifies the certificate for the Service's DNS name."""

    def __init__(self, port: int, ca_file: Path) -> None:
        self.verify = ssl.create_default_context(cafile=str(ca_file))
        super().__init__("127.0.0.1", port, timeout=10, context=self.verify)

    def connect(self) -> None:
        raw = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self.verify.wrap_socket(raw, server_hostname=SERVICE)


def call(port: int, ca_file: Path, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    connection = ApiServerConnection(port, ca_file)
    try:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        connection.request(method, path, body=data, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def webhook_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    folder = tmp_path_factory.mktemp("webhook-tls")
    cert, key = write_certificate(folder)
    process = subprocess.Popen(
        [*WEBHOOK, "--tls-cert", str(cert), "--tls-key", str(key)],
        stderr=subprocess.PIPE,
        text=True,
        env=config_environment(),
    )
    try:
        assert process.stderr is not None
        port = 0
        for line in process.stderr:  # ends if the process dies, so no hang
            if match := re.search(r"inject-webhook on https://127\.0\.0\.1:(\d+)/mutate", line):
                port = int(match.group(1))
                break
        assert port, "the webhook did not start"
        yield port, cert
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=20)
        if process.stderr is not None:
            process.stderr.close()
        assert code == 0


def test_the_api_server_gets_a_patch_for_its_uid(webhook_process) -> None:
    port, ca = webhook_process
    pod = make_pod(annotations={"coordd.io/inject": "true", "coordd.io/token-secret": "t"})
    request = admission_review(pod)
    status, body = call(port, ca, "POST", "/mutate?timeout=5s", request)
    assert status == 200
    answer = json.loads(body)
    assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
    response = answer["response"]
    assert response["uid"] == request["request"]["uid"]
    assert response["allowed"] is True and response["patchType"] == "JSONPatch"
    patched = jsonpatch.apply_patch(pod, json.loads(base64.b64decode(response["patch"])))
    validate(patched, NEWEST)
    (sidecar,) = patched["spec"]["initContainers"]
    assert sidecar["image"] == CONFIG.sidecar_image and sidecar["restartPolicy"] == "Always"


def test_a_bad_annotation_is_refused_over_https(webhook_process) -> None:
    port, ca = webhook_process
    pod = make_pod(annotations={"coordd.io/inject": "true", "coordd.io/sidecar-cpu": "-1"})
    status, body = call(port, ca, "POST", "/mutate", admission_review(pod))
    response = json.loads(body)["response"]
    assert status == 200 and response["allowed"] is False
    assert "annotation coordd.io/sidecar-cpu: '-1'" in response["status"]["message"]


def test_health_and_wrong_requests(webhook_process) -> None:
    port, ca = webhook_process
    assert call(port, ca, "GET", "/healthz") == (200, b"ok\n")
    assert call(port, ca, "POST", "/validate", {})[0] == 404
    status, body = call(port, ca, "POST", "/mutate", {"kind": "Pod"})
    assert status == 400 and b"not an AdmissionReview" in body
    # Plain HTTP is not spoken at all.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not raw.recv(100).startswith(b"HTTP/1.1 200")


def test_a_rotated_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    cert, key = write_certificate(tmp_path)
    server = WebhookServer(("127.0.0.1", 0), cert, key, CONFIG)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert call(server.port, cert, "GET", "/healthz")[0] == 200
        first = cert.read_bytes()
        write_certificate(tmp_path)  # cert-manager or kubelet rewrites the mounted Secret
        stamp = cert.stat().st_mtime + 5
        os.utime(cert, (stamp, stamp))
        os.utime(key, (stamp, stamp))
        assert cert.read_bytes() != first
        # Verified against the new certificate only: the server must present it.
        assert call(server.port, cert, "GET", "/healthz")[0] == 200
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_the_webhook_refuses_to_start_without_a_certificate(tmp_path: Path) -> None:
    out = subprocess.run(
        WEBHOOK,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=config_environment(),
    )
    assert out.returncode == 2
    assert "--tls-cert and --tls-key are required" in out.stderr
    out = subprocess.run(
        [*WEBHOOK, "--tls-cert", str(tmp_path / "no.crt"), "--tls-key", str(tmp_path / "no.key")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=config_environment(),
    )
    assert out.returncode == 1 and "no.crt" in out.stderr and "Traceback" not in out.stderr
