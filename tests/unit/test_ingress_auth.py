"""API keys: every configured key works, nothing else does."""

from __future__ import annotations

import pytest

from producers.ingress.auth import ApiKeys

KEYS = ["first-key-0123456789", "second-key-abcdefghij"]


def test_each_configured_key_is_accepted() -> None:
    keys = ApiKeys(KEYS)
    assert all(keys.accepts(key) for key in KEYS)


@pytest.mark.parametrize(
    "presented",
    ["", "first-key", "first-key-0123456789 ", "FIRST-KEY-0123456789", "first-key-0123456789second-key-abcdefghij"],
)
def test_anything_else_is_refused(presented: str) -> None:
    assert not ApiKeys(KEYS).accepts(presented)


def test_odd_strings_are_refused_not_crashed_on() -> None:
    keys = ApiKeys(KEYS)
    assert not keys.accepts("\ud800")
    assert not keys.accepts("é" * 1000)


def test_an_empty_key_set_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least one key"):
        ApiKeys([])
