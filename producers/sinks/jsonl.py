"""JSON Lines output: one result per line, to a file or to standard output."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from producers.sinks.base import ResultSink, SinkError
from sift.contract import ItemResult


class JsonlSink(ResultSink):
    """Writes each result as one JSON line, as it arrives; ``path=None`` writes to standard output.

    The file is opened (so a path that cannot be written fails at once) without being emptied;
    it is emptied when the first batch arrives. A run that fails before its first result leaves
    an earlier file as it was. Every run writes the whole job (a resumed backfill writes every
    result of the job again), and each batch is flushed, so an interrupted run leaves whole lines.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.description = "stdout" if path is None else str(path)
        self._out: IO[str] = sys.stdout if path is None else _open(path)
        self._emptied = path is None

    def write(self, results: Sequence[ItemResult]) -> None:
        """Append the batch's lines and flush them."""
        try:
            self._empty_once()
            for result in results:
                self._out.write(result.model_dump_json(exclude_none=True) + "\n")
            self._out.flush()
        except OSError as err:
            raise SinkError(f"cannot write to {self.description}: {err}") from err

    def close(self) -> None:
        """Finish the output: a run without results leaves an empty file."""
        self._empty_once()
        self._release()

    def abort(self) -> None:
        """Keep the lines written so far, or the earlier file when nothing was written."""
        self._release()

    def _empty_once(self) -> None:
        if not self._emptied:
            self._out.truncate(0)
            self._emptied = True

    def _release(self) -> None:
        if self.path is None:
            self._out.flush()
        else:
            self._out.close()


def _open(path: Path) -> IO[str]:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Append mode creates the file without emptying it; writes after truncate(0) start at the top.
        return path.open("a", encoding="utf-8")
    except OSError as err:
        raise SinkError(f"cannot write {path}: {err.strerror or err}") from err
