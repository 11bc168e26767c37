"""TLS settings: one mapping for redis-py and the Celery broker; rediss:// always verifies; contradictions fail."""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

import pytest
import redis

from sift.broker import make_celery_app
from sift.local import settings_env
from sift.settings import SettingsError, SiftSettings

SECRET = "s3cret-pw"


@pytest.fixture(autouse=True)
def _no_sift_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shell's SIFT_* variables (say SIFT_REDIS_CA_CERTS) must not leak into these settings."""
    for name in [name for name in os.environ if name.startswith("SIFT_")]:
        monkeypatch.delenv(name)


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, Path]:
    """Files standing in for a CA bundle, a client certificate and its key (only their existence is checked)."""
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for path in files.values():
        path.write_text("-----BEGIN CERTIFICATE-----\n")
    return files


def test_a_plain_url_has_no_tls() -> None:
    settings = SiftSettings(redis_url=f"redis://:{SECRET}@host:6379/0")
    assert settings.redis_tls() == {}
    client = settings.redis_client()
    assert client.connection_pool.connection_class is redis.Connection
    client.close()


def test_rediss_verifies_the_server_with_the_system_cas_by_default() -> None:
    settings = SiftSettings(redis_url=f"rediss://:{SECRET}@host:6380/0")
    assert settings.redis_tls() == {"ssl_cert_reqs": ssl.CERT_REQUIRED}


def test_rediss_with_a_ca_bundle_and_a_client_certificate(pem: dict[str, Path]) -> None:
    settings = SiftSettings(
        redis_url="rediss://host:6380/0", redis_ca_certs=pem["ca"], redis_certfile=pem["cert"], redis_keyfile=pem["key"]
    )
    assert settings.redis_tls() == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": str(pem["ca"]),
        "ssl_certfile": str(pem["cert"]),
        "ssl_keyfile": str(pem["key"]),
    }
    # A client certificate may hold its key: the key file is optional.
    alone = SiftSettings(redis_url="rediss://host:6380/0", redis_certfile=pem["cert"])
    assert alone.redis_tls() == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_certfile": str(pem["cert"])}


def test_the_results_store_client_uses_the_tls_options(pem: dict[str, Path]) -> None:
    client = SiftSettings(redis_url="rediss://host:6380/0", redis_ca_certs=pem["ca"]).redis_client()
    pool = client.connection_pool
    assert pool.connection_class is redis.SSLConnection
    assert pool.connection_kwargs["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert pool.connection_kwargs["ssl_ca_certs"] == str(pem["ca"])
    client.close()


def test_the_broker_verifies_too(pem: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    """Without ``broker_use_ssl``, kombu connects to a rediss:// broker *without* verifying it (with a warning)."""
    settings = SiftSettings(redis_url=f"rediss://:{SECRET}@host:6380/0", redis_ca_certs=pem["ca"])
    app = make_celery_app(settings)
    with caplog.at_level(logging.WARNING):
        connection = app.connection_for_write()
    assert connection.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": str(pem["ca"])}
    assert "insecure" not in caplog.text
    connection.release()
    app.close()


def test_a_plain_broker_has_no_tls() -> None:
    app = make_celery_app(SiftSettings(redis_url="redis://host:6379/0"))
    assert app.conf.broker_use_ssl is False
    app.close()


def test_the_settings_come_from_the_environment_and_reach_a_worker(
    pem: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SIFT_REDIS_URL", "rediss://host:6380/0")
    monkeypatch.setenv("SIFT_REDIS_CA_CERTS", str(pem["ca"]))
    settings = SiftSettings()
    assert settings.redis_ca_certs == pem["ca"]
    # WorkerProcess hands settings to its child as SIFT_* variables.
    assert settings_env(settings)["SIFT_REDIS_CA_CERTS"] == str(pem["ca"])


def test_tls_files_with_a_plain_url_are_refused(pem: dict[str, Path]) -> None:
    settings = SiftSettings(redis_url=f"redis://:{SECRET}@host:6379/0", redis_ca_certs=pem["ca"])
    with pytest.raises(SettingsError, match=r"SIFT_REDIS_CA_CERTS set.*not TLS.*rediss://") as raised:
        settings.redis_tls()
    assert SECRET not in str(raised.value)
    with pytest.raises(SettingsError):
        settings.redis_client()
    with pytest.raises(SettingsError):
        make_celery_app(settings)


def test_a_key_without_a_certificate_is_refused(pem: dict[str, Path]) -> None:
    settings = SiftSettings(redis_url="rediss://host:6380/0", redis_keyfile=pem["key"])
    with pytest.raises(SettingsError, match="SIFT_REDIS_KEYFILE is set without SIFT_REDIS_CERTFILE"):
        settings.redis_tls()


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    settings = SiftSettings(redis_url="rediss://host:6380/0", redis_ca_certs=tmp_path / "nope.pem")
    with pytest.raises(SettingsError, match=r"SIFT_REDIS_CA_CERTS=.*nope\.pem: no such file"):
        settings.redis_tls()


@pytest.mark.parametrize("query", ["ssl_cert_reqs=none", "ssl_cert_reqs=CERT_REQUIRED", "ssl_ca_certs=/etc/ca.pem"])
def test_tls_options_in_the_url_are_refused(query: str) -> None:
    """redis-py and kombu read them differently; SIFT_REDIS_* settings are the one way, and verification stays on."""
    settings = SiftSettings(redis_url=f"rediss://:{SECRET}@host:6380/0?{query}")
    with pytest.raises(SettingsError, match=r"SIFT_REDIS_URL carries TLS options.*SIFT_REDIS_CA_CERTS") as raised:
        settings.redis_tls()
    assert SECRET not in str(raised.value)


def test_without_a_url_the_usual_error() -> None:
    with pytest.raises(SettingsError, match="SIFT_REDIS_URL is not set"):
        SiftSettings(redis_url=None).redis_tls()
