"""Credentials for model hosts: each header goes to the URLs under its prefix and nowhere else.

Pure: no request is made; the public host names here are never resolved.
"""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from app.core.downloads import redact
from app.core.settings import load_settings
from app.models.credentials import Credentials, header_of

OPERATOR = Credentials.of(
    {
        "https://models.example.com/private/": SecretStr("op-token"),
        "https://models.example.com/private/team/": SecretStr("Team-Key: t-1"),
        "https://models.example.com/acme": SecretStr("acme-token"),  # no trailing slash
    }
)


@pytest.mark.parametrize(
    ("url", "header"),
    [
        ("https://models.example.com/private/a.safetensors", {"Authorization": "Bearer op-token"}),
        ("https://MODELS.example.com/private/a.safetensors", {"Authorization": "Bearer op-token"}),
        ("https://models.example.com:443/private/a", {"Authorization": "Bearer op-token"}),
        ("https://models.example.com/private/team/a", {"Team-Key": "t-1"}),  # the longer prefix
        ("https://models.example.com/public/a.safetensors", {}),  # same host, outside the prefix
        ("http://models.example.com/private/a.safetensors", {}),  # another scheme
        ("https://models.example.com:8443/private/a", {}),  # another port
        ("https://models.example.com.evil.example/private/a", {}),  # a host that only starts so
        ("https://cdn.example.com/private/a.safetensors", {}),  # where a redirect may lead
        ("s3://models.example.com/private/a", {}),
        # The path ends at a `/`: a prefix without one is a segment, not a string start.
        ("https://models.example.com/acme", {"Authorization": "Bearer acme-token"}),
        ("https://models.example.com/acme/a.safetensors", {"Authorization": "Bearer acme-token"}),
        ("https://models.example.com/acme-rival/a.safetensors", {}),
        ("https://models.example.com/acmex", {}),
        # A path that may reach elsewhere than it reads gets nothing.
        ("https://models.example.com/private/../public/a", {}),
        ("https://models.example.com/private/%2e%2e/public/a", {}),
        ("https://models.example.com/private/%2E%2E/public/a", {}),
        ("https://models.example.com/private/./a.safetensors", {}),
        ("https://models.example.com/private/..%2fpublic/a", {}),
        ("https://models.example.com/private%2F../public/a", {}),
        ("https://models.example.com/private\\..\\public/a", {}),
    ],
)
def test_a_credential_goes_only_to_urls_under_its_prefix(url: str, header: dict[str, str]) -> None:
    assert OPERATOR.headers(url) == header


def test_a_requests_own_credentials_come_before_the_operators() -> None:
    mine = Credentials.for_host_of("https://models.example.com/x", SecretStr("mine"))
    both = mine.before(OPERATOR)
    assert both.headers("https://models.example.com/private/a") == {"Authorization": "Bearer mine"}
    assert both.headers("https://other.example.com/a") == {}
    assert both.fingerprint("https://models.example.com/a") != OPERATOR.fingerprint(
        "https://models.example.com/private/a"
    )
    assert "mine" not in both.fingerprint("https://models.example.com/a")


@pytest.mark.parametrize(
    ("value", "header"),
    [
        ("hf_abc", ("Authorization", "Bearer hf_abc")),
        ("Bearer hf_abc", ("Authorization", "Bearer hf_abc")),
        ("Basic dXNlcjpwYXNz", ("Authorization", "Basic dXNlcjpwYXNz")),
        ("X-Api-Key: k-1", ("X-Api-Key", "k-1")),
        ("user:pass", ("Authorization", "Bearer user:pass")),  # no space: a token, not a header
    ],
)
def test_a_value_is_a_token_or_a_whole_header(value: str, header: tuple[str, str]) -> None:
    assert header_of(value) == header


def test_the_hugging_face_and_civitai_tokens_go_to_their_hosts_only() -> None:
    settings = load_settings(hf_token="hf_1", civitai_token="cv_2")
    credentials = Credentials.from_settings(settings)
    hf = "https://huggingface.co/org/repo/resolve/main/x.safetensors"
    assert credentials.headers(hf) == {"Authorization": "Bearer hf_1"}
    assert credentials.headers("https://civitai.com/api/download/models/1") == {
        "Authorization": "Bearer cv_2"
    }
    # Hugging Face redirects downloads to its CDN: the token does not follow.
    assert credentials.headers("https://cdn-lfs.huggingface.co/repos/x") == {}


def test_a_bad_prefix_stops_start_up_without_showing_the_token() -> None:
    from app.core.settings import SettingsError

    with pytest.raises(SettingsError) as raised:
        load_settings(model_credentials={"models.example.com/": "very-secret"})
    assert "MODEL_CREDENTIALS" in str(raised.value)
    assert "very-secret" not in str(raised.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@host.example/a/b.safetensors", "https://host.example/a/b.safetensors"),
        ("https://host.example/b.safetensors?token=t&x=1", "https://host.example/b.safetensors?…"),
        ("s3://bucket/key.safetensors", "s3://bucket/key.safetensors"),
    ],
)
def test_urls_are_shown_without_user_info_or_query(url: str, shown: str) -> None:
    assert redact(url) == shown
