"""comfyui-api's settings by their names: mapped onto ours, a conflict with ours a start-up
error naming both, the rest named at start-up as having no effect here and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.core.settings import SettingsError, load_settings, their_settings
from app.models.credentials import Credentials
from app.startup import fetch_warmup_prompt
from tests.integration.fileserver import FileServer


def test_their_names_set_ours(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yml"
    manifest.write_text("models: {}\n")
    monkeypatch.setenv("LRU_CACHE_SIZE_GB", "2.5")
    monkeypatch.setenv("CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MANIFEST", str(manifest))
    monkeypatch.setenv("LOG_LEVEL", "warn")
    settings = load_settings()
    assert settings.model_cache_max_gb == 2.5
    assert settings.model_cache_dir == tmp_path / "cache"
    assert settings.models_manifest == manifest
    assert settings.log_level == "warning"


@pytest.mark.parametrize(("theirs", "ours"), [("trace", "debug"), ("fatal", "critical")])
def test_their_log_levels(monkeypatch: pytest.MonkeyPatch, theirs: str, ours: str) -> None:
    monkeypatch.setenv("LOG_LEVEL", theirs)
    assert load_settings().log_level == ours


def test_an_lru_cache_of_zero_is_no_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LRU_CACHE_SIZE_GB", "0")
    assert load_settings().model_cache_max_gb is None


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        (("LRU_CACHE_SIZE_GB", "2"), ("MODEL_CACHE_MAX_GB", "3")),
        (("CACHE_DIR", "/a"), ("MODEL_CACHE_DIR", "/b")),
    ],
)
def test_theirs_and_ours_set_differently_stop_start_up(
    monkeypatch: pytest.MonkeyPatch, theirs: tuple[str, str], ours: tuple[str, str]
) -> None:
    monkeypatch.setenv(*theirs)
    monkeypatch.setenv(*ours)
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert theirs[0] in str(raised.value) and ours[0] in str(raised.value)


def test_the_same_value_under_both_names_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LRU_CACHE_SIZE_GB", "3")
    monkeypatch.setenv("MODEL_CACHE_MAX_GB", "3")
    assert load_settings().model_cache_max_gb == 3


def test_their_auth_header_without_prefixes_stops_start_up_saying_how_to_list_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_AUTH_HEADER_NAME", "X-Api-Key")
    monkeypatch.setenv("HTTP_AUTH_HEADER_VALUE", "operator-secret")
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert "HTTP_AUTH_HEADER_PREFIXES=" in str(raised.value)
    assert "operator-secret" not in str(raised.value)


def test_their_auth_header_goes_only_under_the_listed_prefixes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_AUTH_HEADER_NAME", "X-Api-Key")
    monkeypatch.setenv("HTTP_AUTH_HEADER_VALUE", "operator-secret")
    monkeypatch.setenv("HTTP_AUTH_HEADER_PREFIXES", "https://files.example.com/models/")
    settings = load_settings()
    credentials = Credentials.from_settings(settings)
    inside = "https://files.example.com/models/x.safetensors"
    assert credentials.headers(inside) == {"X-Api-Key": "operator-secret"}
    assert credentials.headers("https://files.example.com/other/x") == {}
    assert credentials.headers("https://elsewhere.example.com/models/x") == {}
    # and the http_upload PUTs, to the same prefixes only
    assert settings.http_upload_auth_header == SecretStr("X-Api-Key: operator-secret")
    assert settings.http_upload_auth_prefixes == ("https://files.example.com/models/",)


GRAPH = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8}}}


def test_the_warmup_url_is_fetched_with_the_operators_header_under_its_prefixes_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files, other = FileServer("127.0.0.1"), FileServer("127.0.0.2")
    try:
        files.files["/ops/warmup.json"] = json.dumps(GRAPH).encode()
        files.guards["/ops/warmup.json"] = lambda seen: seen.header("X-Api-Key") == "op-secret"
        files.redirects["/ops/moved.json"] = other.url("/warmup.json")
        other.files["/warmup.json"] = json.dumps({"prompt": GRAPH}).encode()
        monkeypatch.setenv("HTTP_AUTH_HEADER_NAME", "X-Api-Key")
        monkeypatch.setenv("HTTP_AUTH_HEADER_VALUE", "op-secret")
        monkeypatch.setenv("HTTP_AUTH_HEADER_PREFIXES", files.url("/ops/"))
        monkeypatch.setenv("WARMUP_PROMPT_URL", files.url("/ops/warmup.json"))
        settings = fetch_warmup_prompt(load_settings())
        assert settings.warmup_prompt_file is not None
        assert json.loads(settings.warmup_prompt_file.read_text()) == GRAPH
        monkeypatch.setenv("WARMUP_PROMPT_URL", files.url("/ops/moved.json"))
        assert fetch_warmup_prompt(load_settings()).warmup_prompt_file is not None
        assert other.requests_for("/warmup.json")[0].header("X-Api-Key") is None
        monkeypatch.setenv("WARMUP_PROMPT_URL", files.url("/ops/none.json"))
        with pytest.raises(SettingsError) as missing:
            fetch_warmup_prompt(load_settings())
    finally:
        files.close()
        other.close()
    assert "WARMUP_PROMPT_URL" in str(missing.value) and "404" in str(missing.value)
    assert "op-secret" not in str(missing.value)


def test_settings_without_effect_are_named_with_why() -> None:
    env = {"PREPEND_FILENAMES": "true", "MARKDOWN_SCHEMA_DESCRIPTIONS": "false",
           "BASE": "ai-dock", "SALAD_MACHINE_ID": "m-1", "SALAD_PROJECT_NAME": "p"}  # fmt: skip
    notes = their_settings(env).notes
    for name in env:
        assert any(name in note for note in notes), name
    assert their_settings({}).notes == []


def test_their_salad_variables_are_system_event_metadata_in_their_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYSTEM_META_REGION", "eu")
    monkeypatch.setenv("SALAD_MACHINE_ID", "m-1")
    monkeypatch.setenv("SALAD_ORGANIZATION_NAME", "acme")
    monkeypatch.setenv("SALAD_PROJECT_ID", "")  # unset for theirs too: not sent
    monkeypatch.setenv("SALAD_CONTAINER_GROUP_ID", "cg-9")
    meta = load_settings().system_event_metadata()
    assert list(meta.items()) == [
        ("REGION", "eu"),
        ("salad_organization_name", "acme"),
        ("salad_container_group_id", "cg-9"),
        ("salad_machine_id", "m-1"),
    ]


def test_without_salad_variables_system_event_metadata_is_system_meta_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SYSTEM_META_POD", "p1")
    assert load_settings().system_event_metadata() == {"POD": "p1"}
