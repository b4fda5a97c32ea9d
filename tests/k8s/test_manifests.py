"""k8s/: every kustomization renders, every object is valid for Kubernetes 1.29 and the newest
version kubernetes-validate knows (strict), and what matters is asserted, not only validated."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from coordd.config import Settings
from tests.k8s.kube import K8S, NEWEST, OLDEST, render, validate

KUSTOMIZATIONS = sorted(
    str(p.parent.relative_to(K8S))
    for p in K8S.rglob("kustomization.yaml")
    if yaml.safe_load(p.read_text())["kind"] == "Kustomization"
)
OVERLAYS = [k for k in KUSTOMIZATIONS if k.startswith("overlays/")]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {k: render(K8S / k) for k in KUSTOMIZATIONS}


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _env(container: dict[str, Any], config: dict[str, str]) -> dict[str, Any]:
    """The container's variables: its ConfigMap's (envFrom), then its own env on top."""
    env: dict[str, Any] = dict(config)
    env.update({e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]})
    return env


def test_every_overlay_and_the_observability_stack_is_rendered() -> None:
    assert {"overlays/example", "overlays/external", "overlays/cloudnative-pg"} <= set(OVERLAYS)
    assert "observability" in KUSTOMIZATIONS


@pytest.mark.parametrize("version", [OLDEST, NEWEST])
def test_every_rendered_object_is_valid_strictly(rendered, version: str) -> None:
    checked = 0
    for kustomization, objects in rendered.items():
        assert objects, kustomization
        for obj in objects:
            try:
                validate(obj, version)
            except Exception as exc:
                pytest.fail(f"{kustomization}: {obj['kind']}/{obj['metadata']['name']}: {exc}")
            checked += 1
    assert checked > 40


def test_validation_can_fail() -> None:
    """The strict check refuses an unknown field, in a built-in kind and in the CRD alike."""
    objects = render(K8S / "overlays/cloudnative-pg")
    for kind, name in (("Deployment", "coordd"), ("Cluster", "coordd-pg")):
        bad = _one(objects, kind, name)
        bad["spec"]["replicaz"] = 2
        with pytest.raises(Exception, match="replicaz"):
            validate(bad, NEWEST)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_daemon_deployment_is_hardened_and_probed(rendered, overlay: str) -> None:
    objects = rendered[overlay]
    deployment = _one(objects, "Deployment", "coordd")
    config = _one(objects, "ConfigMap", "coordd-config")["data"]
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    env = _env(container, config)
    assert container["args"] == ["serve"]
    # Probes: gRPC health on the plaintext health-only listener the daemon is told to open.
    health_port = int(env["COORDD_HEALTH_LISTEN"].rpartition(":")[2])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": health_port}, probe
    assert env["COORDD_LISTEN"] == "0.0.0.0:7420"
    # The grace period covers the preStop pause plus the daemon's own grace.
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > pause + float(env["COORDD_GRACE"])
    # Credentials and TLS: the daemon refuses plaintext beyond loopback without them.
    assert env["COORDD_AUTH"] == "token"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/etc/coordd/policy"]]["secret"]["secretName"] == "coordd-policy"
    assert volumes[mounts["/etc/coordd/tls"]]["secret"]["secretName"] == "coordd-tls"
    assert env["COORDD_POLICY"].startswith("/etc/coordd/policy/")
    assert env["COORDD_TLS_CERT"].startswith("/etc/coordd/tls/")
    assert "secretKeyRef" in env["COORDD_DSN"]
    # Security context.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    resources = container["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    # Stays available through voluntary disruptions.
    pdb = _one(objects, "PodDisruptionBudget", "coordd")
    assert pdb["spec"]["minAvailable"] >= 1
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]


def test_the_dsn_comes_from_the_right_secret_per_overlay(rendered) -> None:
    def dsn(overlay: str) -> dict[str, str]:
        container = _one(rendered[overlay], "Deployment", "coordd")["spec"]["template"]["spec"]
        (env,) = [e for e in container["containers"][0]["env"] if e["name"] == "COORDD_DSN"]
        return dict(env["valueFrom"]["secretKeyRef"])

    assert dsn("overlays/external") == {"name": "coordd-db", "key": "dsn"}
    assert dsn("overlays/cloudnative-pg") == {"name": "coordd-pg-app", "key": "uri"}
    generated = dsn("overlays/example")
    secrets = [o for o in rendered["overlays/example"] if o["kind"] == "Secret"]
    assert generated["name"] in {s["metadata"]["name"] for s in secrets}
    cluster = _one(rendered["overlays/cloudnative-pg"], "Cluster", "coordd-pg")
    # CloudNativePG names the app Secret after the Cluster.
    assert cluster["metadata"]["name"] + "-app" == "coordd-pg-app"
    postgres = _one(rendered["overlays/example"], "StatefulSet", "coordd-postgres")
    assert postgres["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]


def test_only_injected_pods_reach_the_daemon_port(rendered) -> None:
    policy = _one(rendered["overlays/external"], "NetworkPolicy", "coordd")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    grpc_rule, health_rule = policy["ingress"]
    assert grpc_rule["ports"] == [{"port": 7420, "protocol": "TCP"}]
    assert grpc_rule["from"] == [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"coordd.io/sidecar": "injected"}}}
    ]
    assert "from" not in health_rule and health_rule["ports"] == [{"port": 7421, "protocol": "TCP"}]


def test_the_webhook_configuration(rendered) -> None:
    objects = rendered["overlays/external"]
    (hook,) = _one(objects, "MutatingWebhookConfiguration", "coordd-sidecar-injector")["webhooks"]
    assert hook["clientConfig"]["service"] == {
        "name": "coordd-injector",
        "namespace": "coordd",
        "path": "/mutate",
        "port": 443,
    }
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["sideEffects"] == "None"
    assert hook["failurePolicy"] == "Fail"
    assert hook["reinvocationPolicy"] == "Never"
    assert hook["namespaceSelector"] == {"matchLabels": {"coordd.io/inject": "enabled"}}
    assert hook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    service = _one(objects, "Service", "coordd-injector")
    deployment = _one(objects, "Deployment", "coordd-injector")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["coordd", "inject-webhook"]
    env = _env(container, {})
    assert env["COORDD_UPSTREAM"] == "coordd.coordd.svc.cluster.local:7420"
    assert env["COORDD_SIDECAR_IMAGE"] == container["image"]
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    # The namespaces of coordd itself never get a sidecar.
    namespace = _one(objects, "Namespace", "coordd")
    assert namespace["metadata"]["labels"]["coordd.io/inject"] == "disabled"


def test_tracing_reaches_the_collector_and_the_collector_reaches_jaeger(rendered) -> None:
    example = rendered["overlays/example"]
    config = _one(example, "ConfigMap", "coordd-config")["data"]
    assert config["OTEL_TRACES_EXPORTER"] == "otlp"
    endpoint = config["OTEL_EXPORTER_OTLP_ENDPOINT"]
    injector = _one(example, "Deployment", "coordd-injector")["spec"]["template"]["spec"]
    assert _env(injector["containers"][0], {})["OTEL_EXPORTER_OTLP_ENDPOINT"] == endpoint
    observability = rendered["observability"]
    service = _one(observability, "Service", "otel-collector")
    host, port = endpoint.removeprefix("http://").split(":")
    assert host == f"otel-collector.{service['metadata']['namespace']}.svc.cluster.local"
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    (configmap,) = [o for o in observability if o["kind"] == "ConfigMap"]
    collector = yaml.safe_load(configmap["data"]["config.yaml"])
    pipeline = collector["service"]["pipelines"]["traces"]
    for section in ("receivers", "processors", "exporters"):
        assert set(pipeline[section]) <= set(collector[section]), section
    jaeger = collector["exporters"]["otlp/jaeger"]["endpoint"]
    jaeger_service = _one(observability, "Service", "jaeger")
    assert jaeger == "jaeger.observability.svc.cluster.local:4317"
    assert 4317 in {p["port"] for p in jaeger_service["spec"]["ports"]}


def test_kustomize_files_are_referenced(rendered) -> None:
    """Every YAML file under k8s/ is part of some kustomization (nothing stale lies around)."""
    referenced: set[Path] = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        for entry in spec.get("resources", []):
            referenced.add((kustomization.parent / entry).resolve())
        for generator in spec.get("configMapGenerator", []):
            for file in generator.get("files", []):
                referenced.add((kustomization.parent / file.rpartition("=")[2]).resolve())
    for path in K8S.rglob("*.yaml"):
        if path.name != "kustomization.yaml":
            assert path.resolve() in referenced, path


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_daemon_accepts_its_rendered_configuration(rendered, overlay: str) -> None:
    """The environment the pod gets passes the daemon's own settings check (coordd serve)."""
    objects = rendered[overlay]
    pod = _one(objects, "Deployment", "coordd")["spec"]["template"]["spec"]
    config = _one(objects, "ConfigMap", "coordd-config")["data"]
    environ = {}
    for name, value in _env(pod["containers"][0], config).items():
        if isinstance(value, str):
            environ[name] = value
        elif "secretKeyRef" in value:
            environ[name] = "postgresql://coordd:secret@db:5432/coordd"
        else:
            environ[name] = "coordd-7d9f8-abcde"  # the downward API's pod name
    settings = Settings.from_env(environ)
    assert settings.auth == "token" and settings.tls and settings.dsn
    assert settings.health_listen == "0.0.0.0:7421"
    assert settings.server_id == "coordd-7d9f8-abcde"
    assert settings.grace_s < pod["terminationGracePeriodSeconds"]


def test_injection_runs_from_the_base_install() -> None:
    """coordd inject and inject-webhook import nothing of the [server] extra."""
    blocked = ("psycopg", "psycopg_pool", "hnswlib", "numpy", "pgserver")
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "from coordd.cli import main\n"
        "import coordd.inject.webhook, coordd.inject.offline\n"
        "raise SystemExit(main(['inject', '-f', '-']))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input="apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == "pod/p not opted in\n"


def test_cert_manager_issues_the_certificates_the_pods_mount(rendered) -> None:
    objects = rendered["overlays/cloudnative-pg"]
    certificates = {c["spec"]["secretName"]: c for c in objects if c["kind"] == "Certificate"}
    issuers = {i["metadata"]["name"] for i in objects if i["kind"] == "Issuer"}
    for certificate in certificates.values():
        assert certificate["spec"]["issuerRef"]["name"] in issuers
    daemon = _one(objects, "Deployment", "coordd")["spec"]["template"]["spec"]
    injector = _one(objects, "Deployment", "coordd-injector")["spec"]["template"]["spec"]
    mounted = {
        v["secret"]["secretName"] for v in daemon["volumes"] + injector["volumes"] if "secret" in v
    }
    assert {"coordd-tls", "coordd-injector-tls"} <= mounted
    assert {"coordd-tls", "coordd-injector-tls"} <= set(certificates)
    # The daemon's certificate names the host sidecars dial; the webhook's, its Service.
    upstream = _env(injector["containers"][0], {})["COORDD_UPSTREAM"].rpartition(":")[0]
    assert upstream in certificates["coordd-tls"]["spec"]["dnsNames"]
    (hook,) = _one(objects, "MutatingWebhookConfiguration", "coordd-sidecar-injector")["webhooks"]
    service = hook["clientConfig"]["service"]
    webhook_name = f"{service['name']}.{service['namespace']}.svc"
    assert certificates["coordd-injector-tls"]["spec"]["dnsNames"] == [webhook_name]
    # cert-manager's CA injector fills the caBundle from that Certificate.
    configuration = _one(objects, "MutatingWebhookConfiguration", "coordd-sidecar-injector")
    source = configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    injector_certificate = certificates["coordd-injector-tls"]["metadata"]
    assert source == f"{injector_certificate['namespace']}/{injector_certificate['name']}"
