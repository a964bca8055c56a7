"""The exporter over HTTPS with basic auth, scraped by urllib and by a real Prometheus."""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gateway_metrics import PrometheusExporter
from support import prometheus_server

USER, PASSWORD = "prometheus", "correct horse battery staple"


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def https_exporter(registry, certificate, **options) -> PrometheusExporter:
    """A started exporter on 127.0.0.1 serving HTTPS with ``certificate``."""
    cert, key = certificate
    exporter = PrometheusExporter(
        0, registry=registry, addr="127.0.0.1", certfile=str(cert), keyfile=str(key), **options
    )
    exporter.start()
    return exporter


@pytest.fixture
def secure_exporter(registry, metrics, certificate):
    exporter = https_exporter(
        registry, certificate, basic_auth={USER: PASSWORD, "grafana-agent": "another secret"}
    )
    for _ in range(3):
        metrics.record_request(
            provider="openai",
            model="gpt-4o",
            operation="chat",
            status="ok",
            latency_s=0.3,
            input_tokens=1000,
            output_tokens=200,
        )
    yield exporter
    exporter.stop()


def get(port: int, cafile: Path, credentials: tuple[str, str] | None):
    """Status, headers and body of GET /metrics over HTTPS."""
    request = urllib.request.Request(f"https://127.0.0.1:{port}/metrics")
    if credentials is not None:
        token = base64.b64encode(":".join(credentials).encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    context = ssl.create_default_context(cafile=str(cafile))
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_valid_credentials_get_the_metrics_over_https(secure_exporter, certificate):
    status, _, body = get(secure_exporter.port, certificate[0], (USER, PASSWORD))
    assert status == 200
    assert b'ractogateway_requests_total{model="gpt-4o"' in body
    assert get(secure_exporter.port, certificate[0], ("grafana-agent", "another secret"))[0] == 200


@pytest.mark.parametrize(
    "credentials",
    [None, (USER, "wrong"), ("nobody", PASSWORD), (USER, PASSWORD + "x"), (USER, "")],
)
def test_anything_else_gets_401_and_no_metrics(secure_exporter, certificate, credentials):
    status, headers, body = get(secure_exporter.port, certificate[0], credentials)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith('Basic realm="metrics"')
    assert b"ractogateway" not in body and b"gpt-4o" not in body


def test_plain_http_is_not_served(secure_exporter):
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{secure_exporter.port}/metrics", timeout=5)
    assert secure_exporter.is_running


def test_clients_that_never_start_the_handshake_are_cut_and_never_starve_a_scrape(
    registry, metrics, certificate
):
    exporter = https_exporter(
        registry, certificate, basic_auth={USER: PASSWORD}, timeout_s=1.0, max_connections=4
    )
    silent = [socket.create_connection(("127.0.0.1", exporter.port), timeout=5) for _ in range(20)]
    try:
        for _ in range(3):
            status, _, _ = get(exporter.port, certificate[0], (USER, PASSWORD))
            assert status == 200
        started = time.monotonic()
        for sock in silent:
            sock.settimeout(max(0.1, started + 10 - time.monotonic()))
            with contextlib.suppress(ConnectionError):
                assert sock.recv(1) == b""
        assert time.monotonic() - started < 5
    finally:
        for sock in silent:
            sock.close()
        exporter.stop()


def test_tls_and_auth_arguments_are_checked(certificate):
    with pytest.raises(ValueError, match="certfile and keyfile"):
        PrometheusExporter(0, certfile=str(certificate[0]))
    with pytest.raises(TypeError, match="basic_auth"):
        PrometheusExporter(0, basic_auth={"user": 5})
    with pytest.raises(ValueError, match="must not contain ':'"):
        PrometheusExporter(0, basic_auth={"a:b": "c"})


@pytest.mark.integration
def test_a_real_prometheus_scrapes_over_https_with_basic_auth(
    secure_exporter, certificate, tmp_path
):
    target = f"127.0.0.1:{secure_exporter.port}"

    def job(name: str, password: str) -> dict:
        return {
            "job_name": name,
            "scheme": "https",
            "scrape_interval": "1s",
            "tls_config": {"ca_file": str(certificate[0])},
            "basic_auth": {"username": USER, "password": password},
            "static_configs": [{"targets": [target]}],
        }

    config = {"scrape_configs": [job("gateway", PASSWORD), job("intruder", "wrong")]}
    server = prometheus_server(tmp_path, config=config)

    def query(expression: str) -> list[dict]:
        return server.get_json("/api/v1/query", query=expression)["data"]["result"]

    try:
        deadline = time.monotonic() + 90
        requests, intruder = [], []
        while time.monotonic() < deadline:
            try:
                requests = query('ractogateway_requests_total{job="gateway"}')
                intruder = query('up{job="intruder"}')
            except (urllib.error.URLError, ConnectionError):
                pass
            if requests and intruder:
                break
            time.sleep(0.5)
        assert requests, "Prometheus never stored a scrape of the exporter"
        assert [(r["metric"]["model"], r["value"][1]) for r in requests] == [("gpt-4o", "3")]
        tokens = query('sum(ractogateway_tokens_total{job="gateway"}) by (token_type)')
        assert {r["metric"]["token_type"]: r["value"][1] for r in tokens} == {
            "input": "3000",
            "output": "600",
        }
        assert [r["value"][1] for r in query('up{job="gateway"}')] == ["1"]
        assert [r["value"][1] for r in intruder] == ["0"]
        targets = server.get_json("/api/v1/targets")["data"]["activeTargets"]
        errors = {t["labels"]["job"]: t["lastError"] for t in targets}
        assert errors["gateway"] == ""
        assert "401" in errors["intruder"]
    finally:
        server.stop()
