"""Run the ingress under uvicorn: what ``sift ingress`` does."""

from __future__ import annotations

import uvicorn

from producers.ingress.app import create_app
from producers.ingress.settings import load_ingress_settings
from sift.settings import SettingsError, SiftSettings


def serve(settings: SiftSettings, *, host: str | None = None, port: int | None = None) -> int:
    """Serve until SIGINT/SIGTERM (in-flight requests finish first); ``host``/``port`` override the settings."""
    ingress = load_ingress_settings()
    port = ingress.ingress_port if port is None else port
    if not 0 <= port <= 65535:
        raise SettingsError(f"--port must be 0-65535 (0: any free port), not {port}")
    app = create_app(settings, ingress)
    uvicorn.run(
        app,
        host=host or ingress.ingress_host,
        port=port,
        # Behind a load balancer, log the client's address rather than the balancer's.
        proxy_headers=True,
        server_header=False,
        timeout_graceful_shutdown=30,
    )
    return 0
