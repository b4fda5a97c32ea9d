"""TLS and mTLS: credentials never travel in plaintext off loopback; mtls identity is the cert."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from coordd.config import ConfigError, Settings
from coordd_client import AsyncClient, TLSConfig, UnauthenticatedError, UnavailableError
from tests.fix_daemon import write_policy

SPIFFE_ID = "spiffe://acme.test/ns/prod/sa/planner"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    folder: Path,
    stem: str,
    cn: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
    uris: tuple[str, ...] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer[0].subject if issuer else _name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    cert = builder.sign(issuer[1] if issuer else key, hashes.SHA256())
    (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{stem}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    ca = _issue(folder, "ca", "coordd test CA", None, ca=True)
    _issue(folder, "server", "coordd", ca, server=True)
    _issue(folder, "reviewer-1", "reviewer-1", ca)
    _issue(folder, "rogue", "reviewer-1", None)  # right name, wrong signer
    _issue(folder, "spiffe", "ignored-cn", ca, uris=(SPIFFE_ID,))
    _issue(folder, "two-ids", "x", ca, uris=(SPIFFE_ID, "spiffe://acme.test/ns/prod/sa/other"))
    return folder


def _tls(pki: Path, agent: str | None = None) -> TLSConfig:
    if agent is None:
        return TLSConfig(ca_file=str(pki / "ca.pem"))
    return TLSConfig(
        ca_file=str(pki / "ca.pem"),
        cert_file=str(pki / f"{agent}.pem"),
        key_file=str(pki / f"{agent}.key"),
    )


async def test_token_mode_over_tls(start_daemon, pki: Path, tmp_path: Path) -> None:
    import hashlib

    policy = write_policy(
        tmp_path,
        f'[[agents]]\nid = "planner-1"\nrole = "planner"\n'
        f'token_sha256 = "{hashlib.sha256(b"t0k").hexdigest()}"\n'
        '[[grants]]\nrole = "planner"\nnamespaces = ["**"]\noperations = ["claim", "read"]\n',
    )
    d = start_daemon(
        auth="token",
        policy_file=policy,
        tls_cert_file=pki / "server.pem",
        tls_key_file=pki / "server.key",
    )
    async with await AsyncClient.connect(
        d.address, agent_id="planner-1", token="t0k", tls=_tls(pki)
    ) as c:
        got = await c.claims.acquire("acme", "r", ttl=5)
        assert got.claim is not None and got.claim.holder_agent_id == "planner-1"
    with pytest.raises(UnavailableError):  # a plaintext client cannot even connect
        await AsyncClient.connect(d.address, agent_id="x", token="t0k", connect_timeout=1)


async def test_mtls_identity_is_the_certificate(start_daemon, pki: Path, tmp_path: Path) -> None:
    policy = write_policy(
        tmp_path,
        '[[agents]]\nid = "reviewer-1"\nrole = "reviewer"\n'
        '[[grants]]\nrole = "reviewer"\nnamespaces = ["review/**"]\noperations = ["claim"]\n',
    )
    d = start_daemon(
        auth="mtls",
        policy_file=policy,
        tls_cert_file=pki / "server.pem",
        tls_key_file=pki / "server.key",
        tls_client_ca_file=pki / "ca.pem",
    )
    tls = _tls(pki, "reviewer-1")
    async with await AsyncClient.connect(d.address, agent_id="spoofed", tls=tls) as c:
        got = await c.claims.acquire("review/x", "r", ttl=5)
        assert got.claim is not None
        assert (got.claim.holder_agent_id, got.claim.holder_role) == ("reviewer-1", "reviewer")
    for bad in (_tls(pki), _tls(pki, "rogue")):  # no certificate / one the CA did not sign
        with pytest.raises((UnavailableError, UnauthenticatedError)):
            client = await AsyncClient.connect(d.address, agent_id="x", tls=bad, connect_timeout=1)
            try:
                await client.claims.get("review/x", "r")
            finally:
                await client.close()


async def test_mtls_identity_is_the_spiffe_id_when_present(
    start_daemon, pki: Path, tmp_path: Path
) -> None:
    policy = write_policy(
        tmp_path,
        f'[[agents]]\nid = "{SPIFFE_ID}"\nrole = "planner"\n'
        '[[grants]]\nrole = "planner"\nnamespaces = ["plans/**"]\noperations = ["write", "read"]\n',
    )
    d = start_daemon(
        auth="mtls",
        policy_file=policy,
        tls_cert_file=pki / "server.pem",
        tls_key_file=pki / "server.key",
        tls_client_ca_file=pki / "ca.pem",
    )
    async with await AsyncClient.connect(d.address, agent_id="x", tls=_tls(pki, "spiffe")) as c:
        entry = await c.memory.put("plans/q1", "k", {"v": 1})
        assert (entry.provenance.agent_id, entry.provenance.role) == (SPIFFE_ID, "planner")
    async with await AsyncClient.connect(d.address, agent_id="x", tls=_tls(pki, "two-ids")) as c:
        with pytest.raises(UnauthenticatedError, match="more than one SPIFFE ID"):
            await c.memory.get("plans/q1", "k")


def test_credentials_off_loopback_need_tls(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="without credentials over TLS"):
        Settings.from_env({}, listen="0.0.0.0:7420", auth="token", policy_file=tmp_path / "p")
    with pytest.raises(ConfigError, match="mtls needs"):
        Settings.from_env({}, auth="mtls")
    ok = Settings.from_env(
        {},
        listen="0.0.0.0:7420",
        auth="token",
        policy_file=tmp_path / "p",
        tls_cert_file=tmp_path / "c",
        tls_key_file=tmp_path / "k",
    )
    assert ok.tls
