"""sift: queue-based text classification and moderation on Celery and Redis.

The wire contract (:mod:`sift.contract`), settings, broker configuration and the
results store live here and import no torch, so a producer installs light.
"""

__version__ = "0.1.0"
