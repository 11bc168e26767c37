"""What every backfill output is: a place that takes batches of results, then is closed or aborted."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType

from sift.contract import ItemResult

INSTALL_HINT = "install the optional dependencies with: pip install 'sift[sinks]'"
"""How to get pyarrow and psycopg, which producers do not install by default."""


class SinkError(Exception):
    """An output target that cannot be used: a bad target, a missing library, an unreachable server."""


class ResultSink(ABC):
    """A destination for a backfill's results.

    Use it as a context manager: leaving the block normally calls :meth:`close` (the output is
    complete), leaving it by an exception calls :meth:`abort` (keep what was written, promise nothing).
    """

    description: str
    """Where the results go, fit to print: a path, ``stdout``, or a URL without its password."""

    @abstractmethod
    def write(self, results: Sequence[ItemResult]) -> None:
        """Store a batch of results; raises :class:`SinkError` when the destination fails."""

    @abstractmethod
    def close(self) -> None:
        """Finish the output after the last batch: every result has been written."""

    def abort(self) -> None:
        """Stop after a failure or an interruption, keeping what was written so far."""
        self.close()

    def __enter__(self) -> ResultSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
