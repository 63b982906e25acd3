"""comfyui-api's per-request credentials: their glob, first match wins, and what each auth type
sends, to which hop of a download. Pure: no request is made; the host names are never resolved."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, TypeAdapter, ValidationError

from app.core.download_auth import CredentialRule, DownloadAuth, first_match, revealed
from app.core.options import JobOptions
from app.models.credentials import Credentials

AUTH: TypeAdapter[DownloadAuth] = TypeAdapter(DownloadAuth)


def rule(pattern: str, token: str = "t") -> CredentialRule:
    return CredentialRule.model_validate(
        {"url_pattern": pattern, "auth": {"type": "bearer", "token": token}}
    )


@pytest.mark.parametrize(
    ("pattern", "url", "matches"),
    [
        ("https://example.com/*", "https://example.com/file.txt", True),
        ("https://example.com/*", "https://example.com/a/file.txt", False),  # * stops at /
        ("https://example.com/**", "https://example.com/a/b/file.txt", True),
        ("https://*.s3.amazonaws.com/**", "https://bucket.s3.amazonaws.com/m/x.safetensors", True),
        ("https://*.s3.amazonaws.com/**", "https://a/b.s3.amazonaws.com/x", False),
        ("s3://my-bucket/*", "s3://my-bucket/x", True),
        ("s3://my-bucket/*", "s3://my-bucket/a/x", False),
        ("https://h/file?.bin", "https://h/file1.bin", True),
        ("https://h/file?.bin", "https://h/file/.bin", True),  # ? is any one character, / too
        ("https://h/a.b", "https://h/aXb", False),  # . is a dot, not any character
        ("https://h/(x)+[y]{1}|$^\\", "https://h/(x)+[y]{1}|$^\\", True),  # all taken literally
        ("https://HuggingFace.co/**", "https://huggingface.co/x", False),  # as written, no case
        ("https://h/*", "https://h/x?sig=1", True),  # the query is part of the string
        ("https://h/*.safetensors", "https://h/x.safetensors?sig=1", False),
        ("https://h/x", "https://h/x/", False),  # anchored at both ends
        ("https://h/x", "https://h/x\n", False),
    ],
)
def test_their_glob(pattern: str, url: str, matches: bool) -> None:
    assert rule(pattern).matches(url) is matches


def test_the_first_matching_rule_wins() -> None:
    rules = [rule("https://h/private/*", "first"), rule("https://h/**", "second")]
    auth = first_match(rules, "https://h/private/x")
    assert auth is not None and auth.headers() == {"Authorization": "Bearer first"}
    auth = first_match(rules, "https://h/other/x")
    assert auth is not None and auth.headers() == {"Authorization": "Bearer second"}
    assert first_match(rules, "https://elsewhere/x") is None
    assert first_match(None, "https://h/x") is None


@pytest.mark.parametrize(
    ("auth", "headers"),
    [
        ({"type": "bearer", "token": "abc"}, {"Authorization": "Bearer abc"}),
        ({"type": "basic", "username": "u", "password": "p"}, {"Authorization": "Basic dTpw"}),
        ({"type": "header", "header_name": "X-Key", "header_value": "k"}, {"X-Key": "k"}),
        ({"type": "query", "query_param": "sig", "query_value": "s"}, {}),
        ({"type": "s3", "access_key_id": "a", "secret_access_key": "b"}, {}),
    ],
)
def test_what_each_auth_type_sends_as_headers(
    auth: dict[str, str], headers: dict[str, str]
) -> None:
    assert AUTH.validate_python(auth).headers() == headers


@pytest.mark.parametrize(
    "auth",
    [
        {"type": "bearer"},
        {"type": "oauth", "token": "x"},
        {"type": "header", "header_name": "Bad Name", "header_value": "v"},
        {"type": "header", "header_name": "X-A", "header_value": "v\r\nX-Injected: 1"},
        {"type": "bearer", "token": "t", "extra": 1},
    ],
)
def test_a_bad_auth_is_refused_without_showing_its_secret(auth: dict[str, str]) -> None:
    with pytest.raises(ValidationError) as raised:
        JobOptions.model_validate({"credentials": [{"url_pattern": "https://h/**", "auth": auth}]})
    shown = " ".join(error["msg"] for error in raised.value.errors())  # what a 400 says
    assert shown and "X-Injected" not in shown


def test_query_auth_sets_the_parameter_replacing_one_there() -> None:
    auth = {"type": "query", "query_param": "sig", "query_value": "se cret"}
    rules = [CredentialRule.model_validate({"url_pattern": "https://h/**", "auth": auth})]
    creds = Credentials.of_client(rules, None, Credentials([]))
    assert creds.url_for("https://h/m/x.bin?sig=old&v=1") == "https://h/m/x.bin?v=1&sig=se+cret"
    assert creds.url_for("https://other/x.bin") == "https://other/x.bin"


def test_a_clients_auth_never_follows_a_redirect_to_another_host() -> None:
    rules = [rule("https://**", "mine")]
    operator = Credentials.of({"https://cdn.example/": SecretStr("op")})
    creds = Credentials.of_client(rules, None, operator)
    start = "https://models.example/x.bin"
    assert creds.headers(start, start) == {"Authorization": "Bearer mine"}
    assert creds.headers("https://models.example/y.bin", start) == {"Authorization": "Bearer mine"}
    # Another host: the pattern matches, but the client's auth stays home.
    assert creds.headers("https://evil.example/x.bin", start) == {}
    assert creds.headers("http://models.example/x.bin", start) == {}
    # The operator's own prefix still holds for its host, as before.
    assert creds.headers("https://cdn.example/x.bin", start) == {"Authorization": "Bearer op"}


def test_a_matching_client_rule_is_the_only_auth_used() -> None:
    operator = Credentials.of({"https://h/": SecretStr("op")})
    query = {"type": "query", "query_param": "sig", "query_value": "s"}
    rules = [CredentialRule.model_validate({"url_pattern": "https://h/**", "auth": query})]
    creds = Credentials.of_client(rules, None, operator)
    assert creds.headers("https://h/x") == {}  # theirs: no fallback to another credential
    assert creds.headers("https://h2/x") == {}
    assert Credentials.of_client(None, None, operator) is operator


def test_fingerprints_tell_credentials_apart_and_show_nothing() -> None:
    a = Credentials.of_client([rule("https://h/**", "token-a")], None, Credentials([]))
    b = Credentials.of_client([rule("https://h/**", "token-b")], None, Credentials([]))
    assert a.fingerprint("https://h/x") != b.fingerprint("https://h/x")
    assert "token-a" not in a.fingerprint("https://h/x")
    assert a.fingerprint("https://other/x") == ""


def test_secrets_are_hidden_in_reprs_and_dumps_but_travel_to_a_fleet() -> None:
    options = JobOptions.model_validate(
        {"credentials": [{"url_pattern": "s3://b/*", "auth": {
            "type": "s3", "access_key_id": "AK", "secret_access_key": "very-secret"}}]}
    )  # fmt: skip
    assert "very-secret" not in repr(options)
    assert "very-secret" not in options.model_dump_json()
    assert options.credentials is not None
    shown = revealed(options.credentials)
    assert shown[0]["auth"] == {
        "type": "s3",
        "access_key_id": "AK",
        "secret_access_key": "very-secret",
    }
    again = JobOptions.model_validate({"credentials": shown})
    assert again.credentials is not None
    assert again.credentials[0].auth == options.credentials[0].auth
