"""sift producers: put jobs on the queue and read their results back. No torch here."""

from producers.client import ItemRef, JobHandle, SiftClient

__all__ = ["ItemRef", "JobHandle", "SiftClient"]
