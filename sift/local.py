"""Single-machine runtime helpers for the demo and the tests: a private Redis, a worker process."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import redis
from celery import Celery
from kombu.exceptions import OperationalError

from sift.broker import make_celery_app
from sift.settings import SettingsError, SiftSettings


def die_with_parent() -> None:
    """In a child before exec: get SIGTERM when the parent dies, so a killed demo or test leaves no orphan."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """A private ``redis-server`` on a free loopback port, in a temporary directory.

    With ``tls_cert_file``, ``tls_key_file`` and ``tls_ca_cert_file`` it serves TLS only (``rediss://``);
    ``tls_auth_clients`` makes it require client certificates signed by that CA.
    """

    def __init__(
        self,
        executable: str = "redis-server",
        password: str | None = None,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        *,
        tls_cert_file: Path | None = None,
        tls_key_file: Path | None = None,
        tls_ca_cert_file: Path | None = None,
        tls_auth_clients: bool = False,
    ) -> None:
        found = shutil.which(executable)
        if found is None:
            raise SettingsError(f"{executable} not found: install it (Debian: apt-get install redis-server)")
        tls_files = (tls_cert_file, tls_key_file, tls_ca_cert_file)
        if any(tls_files) and not all(tls_files):
            raise SettingsError("TLS needs tls_cert_file, tls_key_file and tls_ca_cert_file together")
        self.executable = found
        self.password = password
        self.appendonly = appendonly
        # "always" loses no acknowledged write even on a crash; "everysec" (Redis' default) up to a second.
        self.appendfsync = appendfsync
        self.tls_cert_file, self.tls_key_file, self.tls_ca_cert_file = tls_files
        self.tls_auth_clients = tls_auth_clients
        self.port = 0
        self.dir = Path(tempfile.mkdtemp(prefix="sift-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Connection URL, with the password when one is set."""
        auth = f":{self.password}@" if self.password else ""
        scheme = "rediss" if self.tls_cert_file else "redis"
        return f"{scheme}://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        """Start the server (on the same port again after a :meth:`stop`) and wait until it answers."""
        self.port = self.port or free_port()
        if self.tls_cert_file and self.tls_key_file and self.tls_ca_cert_file:
            listen = ["--port", "0", "--tls-port", str(self.port)]
            listen += ["--tls-cert-file", str(self.tls_cert_file), "--tls-key-file", str(self.tls_key_file)]
            listen += ["--tls-ca-cert-file", str(self.tls_ca_cert_file)]
            listen += ["--tls-auth-clients", "yes" if self.tls_auth_clients else "no"]
        else:
            listen = ["--port", str(self.port)]
        argv = [
            self.executable,
            *listen,
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            self.appendfsync,
            "--daemonize",
            "no",
        ]
        if self.password:
            argv += ["--requirepass", self.password]
        self.process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
        client = redis.Redis.from_url(self.url, **self._tls_client_options())
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)
            finally:
                client.close()

    def _tls_client_options(self) -> dict[str, str]:
        """What the start-up ping needs to pass this server's TLS (its own certificate when clients need one)."""
        if not self.tls_cert_file:
            return {}
        options = {"ssl_ca_certs": str(self.tls_ca_cert_file)}
        if self.tls_auth_clients:
            options |= {"ssl_certfile": str(self.tls_cert_file), "ssl_keyfile": str(self.tls_key_file)}
        return options

    def stop(self) -> None:
        """Stop the server (data on disk is kept until :meth:`close`)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def close(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()


class WorkerProcess:
    """``sift worker`` in a child process; ready once it answers a Celery ping."""

    def __init__(
        self,
        settings: SiftSettings,
        *,
        device: str = "cpu",
        queues: str = "realtime,bulk",
        models: str | None = None,
        threads: int | None = None,
        cpus: str | None = None,
        hostname: str | None = None,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        """``cpus``: pin the worker to these CPUs (``sift worker --cpus``, e.g. ``"0-1"``)."""
        self.settings = settings
        self.hostname = hostname or f"sift-local-{os.getpid()}-{time.monotonic_ns()}@localhost"
        self.argv = [
            sys.executable,
            "-m",
            "sift.cli",
            "worker",
            "--device",
            device,
            "--queues",
            queues,
            "--hostname",
            self.hostname,
        ]
        if models:
            self.argv += ["--models", models]
        if threads:
            self.argv += ["--threads", str(threads)]
        if cpus:
            self.argv += ["--cpus", cpus]
        self.env = {**os.environ, **settings_env(settings), **(env or {})}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 180.0) -> WorkerProcess:
        """Start the worker and wait until its models are loaded and it consumes."""
        log = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent
        )
        app = make_celery_app(self.settings)
        try:
            deadline = time.monotonic() + timeout_s
            while not self._answers_ping(app):
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"worker exited with code {self.process.returncode} before it was ready"
                        + (f"; see {self.log_path}" if self.log_path else "")
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker not ready after {timeout_s:.0f} s")
        except BaseException:
            self.kill()  # never leave a half-started worker behind
            raise
        finally:
            app.close()
        return self

    def _answers_ping(self, app: Celery) -> bool:
        try:
            return bool(app.control.ping(destination=[self.hostname], timeout=0.5))
        except (redis.ConnectionError, redis.TimeoutError, OperationalError):
            # After a Redis restart kombu's pooled connections are stale: the first use raises. Not ready yet.
            return False

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        """Send ``sig`` (SIGTERM: finish the current message, then exit) and wait."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def kill(self) -> None:
        """SIGKILL: the crash case; unacknowledged messages go back to the queue."""
        self.stop(signal.SIGKILL)

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def settings_env(settings: SiftSettings) -> dict[str, str]:
    """``SIFT_*`` environment variables that recreate ``settings`` in a child process."""
    env = {}
    for name, value in settings.model_dump(exclude_none=True).items():
        env[f"SIFT_{name.upper()}"] = str(value)
    return env
