"""sift's HTTP ingress: FastAPI over the Python producer, served by ``sift ingress`` (uvicorn)."""

from producers.ingress.app import create_app
from producers.ingress.settings import IngressSettings, load_ingress_settings

__all__ = ["IngressSettings", "create_app", "load_ingress_settings"]
