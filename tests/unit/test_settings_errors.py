"""A malformed SIFT_* variable is reported by its name, in one line, with exit code 2."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sift.cli import main
from sift.settings import SiftSettings, settings_error_message


def test_the_message_names_the_variable_not_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_METRICS_PORT", "abc")
    monkeypatch.setenv("SIFT_CHUNK_SIZE", "0")
    with pytest.raises(ValidationError) as caught:
        SiftSettings()
    message = settings_error_message(caught.value)
    assert "SIFT_METRICS_PORT:" in message and "SIFT_CHUNK_SIZE:" in message
    assert "abc" not in message, "values are not echoed (they may be secrets)"


def test_the_cli_exits_2_with_that_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SIFT_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("SIFT_RESULT_TTL_S", "forever")
    assert main(["health"]) == 2
    err = capsys.readouterr().err
    assert "SIFT_RESULT_TTL_S" in err and "Traceback" not in err
