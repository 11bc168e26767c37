"""Where ``sift backfill`` writes results: JSON lines, Parquet or PostgreSQL, picked by the target.

pyarrow and psycopg come with the optional ``sinks`` extra and are imported only when a target needs them.
"""

from producers.sinks.base import ResultSink, SinkError
from producers.sinks.targets import SinkKind, Target, open_sink, parse_target

__all__ = ["ResultSink", "SinkError", "SinkKind", "Target", "open_sink", "parse_target"]
