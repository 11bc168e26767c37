"""Output targets of ``sift backfill``: which sink a target picks, bad targets, passwords kept out of messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from producers.sinks import SinkError, SinkKind, open_sink, parse_target
from producers.sinks.dsn import DEFAULT_TABLE, parse_postgres_url, redact_postgres_url, scrub
from producers.sinks.jsonl import JsonlSink
from producers.sinks.parquet import ParquetSink


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("out/results.jsonl", SinkKind.JSONL),
        ("RESULTS.JSONL", SinkKind.JSONL),
        ("-", SinkKind.JSONL),
        ("/data/out/results.parquet", SinkKind.PARQUET),
        ("r.Parquet", SinkKind.PARQUET),
        ("postgresql://sift:pw@db:5432/sift", SinkKind.POSTGRES),
        ("postgres://db/sift?sslmode=require", SinkKind.POSTGRES),
        ("postgresql:///sift", SinkKind.POSTGRES),
        ("POSTGRESQL://db/sift", SinkKind.POSTGRES),
    ],
)
def test_the_target_picks_the_sink(target: str, kind: SinkKind) -> None:
    assert parse_target(target).kind is kind


@pytest.mark.parametrize(
    ("target", "says"),
    [
        ("results.csv", "cannot tell the output format of 'results.csv'"),
        ("results", "cannot tell the output format of 'results'"),
        ("out/", "cannot tell the output format of 'out/'"),
        ("results.jsonl.gz", "cannot tell the output format"),
        ("", "cannot tell the output format of an empty target"),
        ("mysql://root:hunter2@db/x", "cannot write results to a mysql:// URL (mysql://root:***@db/x)"),
        ("s3://bucket/results.parquet", "cannot write results to a s3:// URL"),
    ],
)
def test_a_bad_target_is_refused_with_what_to_give_instead(target: str, says: str) -> None:
    with pytest.raises(SinkError) as refused:
        parse_target(target)

    message = str(refused.value)
    assert says in message
    assert "postgresql://" in message and ".parquet" in message and ".jsonl" in message
    assert "hunter2" not in message


def test_open_sink_opens_files_of_each_format(tmp_path: Path) -> None:
    with open_sink(tmp_path / "a.jsonl") as jsonl, open_sink(str(tmp_path / "b.parquet")) as parquet:
        assert isinstance(jsonl, JsonlSink) and isinstance(parquet, ParquetSink)
    assert (tmp_path / "a.jsonl").read_text() == ""
    assert (tmp_path / "b.parquet").is_file()


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://sift:s3cret@db:5432/sift", "postgresql://sift:***@db:5432/sift"),
        ("postgresql://:s3cret@db/sift", "postgresql://:***@db/sift"),
        (
            "postgresql://sift@db/sift?password=s3cret&sslmode=require",
            "postgresql://sift@db/sift?password=***&sslmode=require",
        ),
        ("postgresql://sift:p%40ss%3Aw@db/sift", "postgresql://sift:***@db/sift"),
        ("postgresql://sift:s3cret@h1:5432,h2:5433/sift", "postgresql://sift:***@h1:5432,h2:5433/sift"),
        ("postgresql://db/sift", "postgresql://db/sift"),
    ],
)
def test_the_password_is_redacted(url: str, redacted: str) -> None:
    assert redact_postgres_url(url) == redacted
    assert parse_postgres_url(url).redacted == redacted


def test_every_spelling_of_the_password_is_scrubbed_from_messages() -> None:
    target = parse_postgres_url("postgresql://sift:p%40ss%3Aw@db/sift?password=other%21")

    message = "bad: p%40ss%3Aw, p@ss:w, other! and other%21"

    assert scrub(message, target.secrets) == "bad: ***, ***, *** and ***"


def test_the_table_parameter_is_sifts_and_is_not_passed_to_libpq() -> None:
    default = parse_postgres_url("postgresql://u:pw@db/sift?sslmode=require")
    assert default.table == (DEFAULT_TABLE,)
    assert default.conninfo == "postgresql://u:pw@db/sift?sslmode=require"

    custom = parse_postgres_url("postgresql://u:pw@db/sift?table=archive.results_2024&sslmode=require")
    assert custom.table == ("archive", "results_2024")
    assert custom.table_name == "archive.results_2024"
    assert custom.conninfo == "postgresql://u:pw@db/sift?sslmode=require"


@pytest.mark.parametrize("table", ["drop table x", "a.b.c", "1abc", "", "x;--", "a" * 64])
def test_a_table_that_is_not_a_plain_name_is_refused(table: str) -> None:
    with pytest.raises(SinkError, match="give a name like sift_results"):
        parse_postgres_url(f"postgresql://u:pw@db/sift?table={table}")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)


@pytest.mark.parametrize(("target", "library"), [("out.parquet", "pyarrow"), ("postgresql://db/x", "psycopg")])
def test_a_missing_optional_library_is_named_with_the_extra_to_install(target: str, library: str) -> None:
    # None in sys.modules makes the import fail as if the library were not installed.
    done = run_python(
        f"import sys; sys.modules[{library!r}] = None\n"
        "from producers.sinks import SinkError, open_sink\n"
        f"try:\n    open_sink({target!r})\nexcept SinkError as err:\n    print(err)\n"
    )

    assert done.returncode == 0, done.stderr
    assert f"needs {library}, which is not installed" in done.stdout
    assert "pip install 'sift[sinks]'" in done.stdout


def test_producers_do_not_import_pyarrow_or_psycopg_until_a_target_needs_them() -> None:
    done = run_python(
        "import sys, producers.backfill, producers.sinks, sift.cli\n"
        "from producers.sinks import open_sink\n"
        "open_sink('-').close()\n"
        "print(sorted(m for m in ('pyarrow', 'psycopg') if m in sys.modules))"
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
