"""The ingress's settings: API keys from SIFT_API_KEYS, and no start without keys unless anonymity is asked for."""

from __future__ import annotations

import pytest

from producers.ingress import create_app, load_ingress_settings
from producers.ingress.settings import IngressSettings
from sift.settings import SettingsError, SiftSettings

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-fedcba9876543210"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SIFT_API_KEYS", "SIFT_INGRESS_ALLOW_ANONYMOUS", "SIFT_MAX_REQUEST_BYTES"):
        monkeypatch.delenv(name, raising=False)


def test_keys_are_read_comma_separated_with_spaces_and_empty_entries_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_API_KEYS", f" {KEY_A} ,, {KEY_B},")
    settings = load_ingress_settings()
    assert [key.get_secret_value() for key in settings.api_keys] == [KEY_A, KEY_B]
    # A key never shows in a repr (and so never in a log of the settings).
    assert KEY_A not in repr(settings) and KEY_B not in str(settings)


def test_a_short_key_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_API_KEYS", f"{KEY_A},hunter2")
    with pytest.raises(SettingsError, match=r"SIFT_API_KEYS: .*key #2 has 7 characters; use at least 16") as caught:
        load_ingress_settings()
    assert "hunter2" not in str(caught.value)
    assert "secrets.token_urlsafe" in str(caught.value)


def test_a_key_with_spaces_or_non_ascii_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_API_KEYS", "this key has spaces in it")
    with pytest.raises(SettingsError, match="key #1 may hold only visible ASCII"):
        load_ingress_settings()
    monkeypatch.setenv("SIFT_API_KEYS", "clé-0123456789abcdef")
    with pytest.raises(SettingsError, match="key #1 may hold only visible ASCII"):
        load_ingress_settings()


def test_other_bad_values_become_settings_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_MAX_REQUEST_BYTES", "lots")
    with pytest.raises(SettingsError, match="SIFT_MAX_REQUEST_BYTES"):
        load_ingress_settings()


def test_no_keys_refuses_to_start_and_says_how_to_fix_it() -> None:
    settings = IngressSettings()
    with pytest.raises(SettingsError) as caught:
        create_app(SiftSettings(redis_url="redis://127.0.0.1:1/0"), settings)
    message = str(caught.value)
    assert "SIFT_API_KEYS" in message and "SIFT_INGRESS_ALLOW_ANONYMOUS=true" in message


def test_anonymous_access_must_be_asked_for_explicitly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_INGRESS_ALLOW_ANONYMOUS", "true")
    settings = load_ingress_settings()
    settings.require_keys_or_anonymous()  # no error
    assert create_app(SiftSettings(redis_url="redis://127.0.0.1:1/0"), settings).title == "sift ingress"


def test_a_bad_webhook_allowlist_stops_the_ingress_at_startup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIFT_WEBHOOK_ALLOWED_NETWORKS", "10.0.5.1/24")  # host bits set: not a network
    with pytest.raises(SettingsError, match="SIFT_WEBHOOK_ALLOWED_NETWORKS"):
        create_app(SiftSettings(redis_url="redis://127.0.0.1:1/0"), IngressSettings(api_keys=KEY_A))


def test_the_ingress_needs_a_redis_url() -> None:
    with pytest.raises(SettingsError, match="SIFT_REDIS_URL is not set"):
        create_app(SiftSettings(redis_url=None), IngressSettings(api_keys=KEY_A))
