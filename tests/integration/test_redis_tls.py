"""Redis over TLS with a password: a real worker and clients on ``rediss://``, the server certificate verified.

A throwaway CA signs the server's certificate (for 127.0.0.1); redis-server listens on TLS only.
Clients that do not trust that CA fail at once with a certificate error instead of connecting.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from kombu.exceptions import OperationalError
from sift_it_helpers import cli_env, run_sift, squash, start_worker, wait_until

from producers.client import SiftClient
from sift.broker import make_celery_app
from sift.local import EmbeddedRedis, WorkerProcess
from sift.settings import SiftSettings

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is needed to make certificates"),
]

PASSWORD = "sift-tls-" + secrets.token_hex(12)
CERT_ERROR = "CERTIFICATE_VERIFY_FAILED"


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subject = f"/CN={name}"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days=2", "-subj", subject, "-keyout", key, "-out", cert)
    return cert, key


def _make_leaf(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    cert, key, csr, ext = (directory / f"{name}.{suffix}" for suffix in ("pem", "key", "csr", "ext"))
    ext.write_text(extensions + "\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", key, "-out", csr)
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-days", "2",
        "-extfile", ext, "-out", cert,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 it signs, a client certificate it signs, and an unrelated CA."""
    directory = tmp_path_factory.mktemp("pki")
    ca = _make_ca(directory, "sift-test-ca")
    other_ca = _make_ca(directory, "some-other-ca")
    server = _make_leaf(directory, "server", ca, "subjectAltName=IP:127.0.0.1,DNS:localhost")
    client = _make_leaf(directory, "client", ca, "extendedKeyUsage=clientAuth")
    return {
        "ca": ca[0],
        "other_ca": other_ca[0],
        "server_cert": server[0],
        "server_key": server[1],
        "client_cert": client[0],
        "client_key": client[1],
    }


@pytest.fixture(scope="module")
def tls_server(pki: dict[str, Path]) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(
        password=PASSWORD, tls_cert_file=pki["server_cert"], tls_key_file=pki["server_key"], tls_ca_cert_file=pki["ca"]
    )
    with server:
        yield server


@pytest.fixture(scope="module")
def tls_settings(tls_server: EmbeddedRedis, pki: dict[str, Path], offline_registry: Path) -> SiftSettings:
    assert tls_server.url.startswith(f"rediss://:{PASSWORD}@127.0.0.1:")
    return SiftSettings(
        redis_url=tls_server.url,
        redis_ca_certs=pki["ca"],
        registry=offline_registry,
        queue_prefix=f"tls-{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture(scope="module")
def tls_worker(tls_settings: SiftSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    process = start_worker(tls_settings, tmp_path_factory.mktemp("tls-worker") / "worker.log", models="sentiment")
    yield process
    process.stop()


def _untrusting(settings: SiftSettings, ca: Path | None) -> SiftSettings:
    """``settings`` trusting ``ca`` instead of the test CA (None: the system's CAs)."""
    return settings.model_copy(update={"redis_ca_certs": ca})


def test_the_server_speaks_only_tls(tls_server: EmbeddedRedis) -> None:
    """A plaintext client gets nowhere (else the tests below prove nothing)."""
    plain = redis.Redis.from_url(tls_server.url.replace("rediss://", "redis://"), socket_timeout=5)
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    plain.close()


@pytest.mark.timeout(120)
def test_a_job_completes_over_tls(tls_settings: SiftSettings, tls_worker: WorkerProcess, id2label) -> None:
    with SiftClient(tls_settings) as client:
        assert client.redis.connection_pool.connection_class is redis.SSLConnection
        ref = client.submit("classify", {"id": "tls-1", "text": "Encrypted and still quick."})
        result = client.result(ref, timeout_s=60)
    assert result.ok, result.error
    assert result.label in id2label("sentiment")
    assert result.worker == tls_worker.hostname


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ca", ["system CAs", "another CA"])
def test_a_client_that_does_not_trust_the_ca_fails_on_the_certificate(
    tls_settings: SiftSettings, pki: dict[str, Path], ca: str
) -> None:
    settings = _untrusting(tls_settings, None if ca == "system CAs" else pki["other_ca"])
    with SiftClient(settings) as client, pytest.raises(redis.ConnectionError) as storing:
        client.submit("classify", {"id": "tls-untrusted", "text": "must not be sent"})
    app = make_celery_app(settings)
    connection = app.connection_for_write()
    with pytest.raises(OperationalError) as brokering:
        connection.ensure_connection(max_retries=1)
    connection.release()
    app.close()
    for raised in (storing.value, brokering.value):
        assert CERT_ERROR in str(raised), raised
        assert PASSWORD not in str(raised)


@pytest.mark.timeout(120)
def test_a_worker_that_does_not_trust_the_ca_logs_the_certificate_error(
    tls_settings: SiftSettings, tmp_path: Path
) -> None:
    """It keeps retrying (as for any unreachable broker) but never consumes over an unverified link."""
    log_path = tmp_path / "untrusting-worker.log"
    worker = WorkerProcess(_untrusting(tls_settings, None), models="sentiment", threads=1)
    with log_path.open("wb") as log:
        process = subprocess.Popen(worker.argv, env=worker.env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: CERT_ERROR in log_path.read_text(errors="replace"), timeout_s=90, what="a certificate error")
    finally:
        process.kill()
        process.wait()
    log = log_path.read_text(errors="replace")
    assert "Cannot connect to rediss://" in log
    assert PASSWORD not in log


@pytest.mark.timeout(180)
def test_sift_submit_and_backfill_over_tls(
    tls_settings: SiftSettings, tls_worker: WorkerProcess, pki: dict[str, Path], tmp_path: Path
) -> None:
    assert tls_settings.redis_url and tls_settings.registry
    env = cli_env(
        redis_url=tls_settings.redis_url,
        redis_ca_certs=str(pki["ca"]),
        registry=str(tls_settings.registry),
        queue_prefix=tls_settings.queue_prefix,
    )
    submitted = run_sift(["submit", "--task", "classify", "--text", "Over TLS from the shell."], env)
    assert submitted.returncode == 0, submitted.stderr
    assert json.loads(submitted.stdout)["worker"] == tls_worker.hostname

    source = tmp_path / "items.jsonl"
    source.write_text("".join(json.dumps({"id": f"b-{n}", "text": f"item {n} is fine"}) + "\n" for n in range(5)))
    out = tmp_path / "out.jsonl"
    args = ["backfill", str(source), "--task", "classify", "--out", str(out), "--no-progress", "--idle-timeout", "60"]
    backfilled = run_sift(args, env)
    assert backfilled.returncode == 0, backfilled.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in results) == [f"b-{n}" for n in range(5)]
    assert all("label" in r for r in results), results


@pytest.mark.timeout(60)
def test_sift_submit_without_the_ca_fails_clearly(tls_settings: SiftSettings) -> None:
    assert tls_settings.redis_url
    env = cli_env(redis_url=tls_settings.redis_url, queue_prefix=tls_settings.queue_prefix)
    done = run_sift(["submit", "--task", "classify", "--text", "not sent"], env, timeout_s=45)
    assert done.returncode == 4, done
    message = squash(done.stderr)
    assert "cannot use Redis at rediss://:***@127.0.0.1" in message and CERT_ERROR in message, message
    assert PASSWORD not in done.stderr + done.stdout


@pytest.mark.timeout(60)
def test_the_password_does_not_appear_in_the_worker_log(tls_worker: WorkerProcess, tls_settings: SiftSettings) -> None:
    with SiftClient(tls_settings) as client:
        assert client.result(client.submit("classify", {"text": "log me"}), timeout_s=60).ok
    assert tls_worker.log_path is not None
    log = tls_worker.log_path.read_text(errors="replace")
    assert "ready" in log and "sift.infer" in log, "this is the worker's log"
    assert PASSWORD not in log
    assert "insecure" not in log.lower()


@pytest.mark.timeout(60)
def test_mutual_tls_with_a_client_certificate(pki: dict[str, Path]) -> None:
    server = EmbeddedRedis(
        tls_cert_file=pki["server_cert"],
        tls_key_file=pki["server_key"],
        tls_ca_cert_file=pki["ca"],
        tls_auth_clients=True,
    )
    with server:
        with_cert = SiftSettings(
            redis_url=server.url,
            redis_ca_certs=pki["ca"],
            redis_certfile=pki["client_cert"],
            redis_keyfile=pki["client_key"],
        )
        client = with_cert.redis_client()
        assert client.ping()
        client.close()
        app = make_celery_app(with_cert)
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
        app.close()

        without_cert = SiftSettings(redis_url=server.url, redis_ca_certs=pki["ca"]).redis_client()
        with pytest.raises(redis.ConnectionError):
            without_cert.ping()
        without_cert.close()
