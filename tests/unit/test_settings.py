"""Settings: defaults, typed parsing of the environment, CONFIG_FILE, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.core.settings import (
    PROJECT_ROOT,
    SECTIONS,
    PassthroughMode,
    Settings,
    SettingsError,
    load_settings,
)
from app.fleet.fleet import log_file_sharing
from app.fleet.shelf import FileShelf
from tests.unit.conftest import VARIABLES

# Every variable the gateway reads, so that a developer's shell cannot leak into a test.


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("port", 3000),
        ("host", "::"),
        ("cmd", None),
        ("comfyui_port_host", 8188),
        ("direct_address", "127.0.0.1"),
        ("input_dir", None),
        ("output_dir", None),
        ("model_dir", None),
        ("startup_check_interval_s", 1.0),
        ("startup_check_max_tries", None),
        ("startup_timeout_s", 900.0),
        ("startup_silence_max_s", 300.0),
        ("always_restart_comfyui", False),
        ("max_queue_depth", 0),
        ("max_body_size_mb", 100.0),
        ("prompt_timeout_s", None),
        ("keep_outputs", False),
        ("log_level", "info"),
        ("comfy_passthrough", PassthroughMode.SAFE),
    ],
)
def test_default(field: str, expected: Any) -> None:
    assert getattr(load_settings(), field) == expected


def test_derived_defaults() -> None:
    settings = load_settings()
    assert settings.comfy_url == "http://127.0.0.1:8188"
    assert settings.max_body_size_bytes == 100 * 1024 * 1024
    assert settings.comfy_output_dir == settings.comfy_home / "output"
    assert settings.comfy_input_dir == settings.comfy_home / "input"
    assert settings.workflow_dir == PROJECT_ROOT / "workflows"


@pytest.mark.parametrize(
    ("name", "raw", "field", "expected"),
    [
        ("PORT", "3100", "port", 3100),
        ("HOST", "0.0.0.0", "host", "0.0.0.0"),
        ("COMFYUI_PORT_HOST", "8190", "comfyui_port_host", 8190),
        ("STARTUP_CHECK_INTERVAL_S", "0.25", "startup_check_interval_s", 0.25),
        ("STARTUP_CHECK_MAX_TRIES", "7", "startup_check_max_tries", 7),
        ("ALWAYS_RESTART_COMFYUI", "true", "always_restart_comfyui", True),
        ("ALWAYS_RESTART_COMFYUI", "1", "always_restart_comfyui", True),
        ("ALWAYS_RESTART_COMFYUI", "false", "always_restart_comfyui", False),
        ("MAX_QUEUE_DEPTH", "4", "max_queue_depth", 4),
        ("MAX_BODY_SIZE_MB", "0.5", "max_body_size_mb", 0.5),
        ("PROMPT_TIMEOUT_S", "90", "prompt_timeout_s", 90.0),
        ("PROMPT_TIMEOUT_S", "", "prompt_timeout_s", None),
        ("CMD", "", "cmd", None),
        ("CMD", "python main.py --cpu", "cmd", "python main.py --cpu"),
        ("OUTPUT_DIR", "/srv/out", "output_dir", Path("/srv/out")),
        ("OUTPUT_DIR", "", "output_dir", None),
        ("LOG_LEVEL", "DEBUG", "log_level", "debug"),
        ("LOG_LEVEL", "Warning", "log_level", "warning"),
        ("log_level", "error", "log_level", "error"),
        ("COMFY_PASSTHROUGH", "full", "comfy_passthrough", PassthroughMode.FULL),
        ("COMFY_PASSTHROUGH", " Full", "comfy_passthrough", PassthroughMode.FULL),
        # It was a boolean before `full`: every spelling of one keeps its meaning.
        ("COMFY_PASSTHROUGH", "true", "comfy_passthrough", PassthroughMode.SAFE),
        ("COMFY_PASSTHROUGH", "yes", "comfy_passthrough", PassthroughMode.SAFE),
        ("COMFY_PASSTHROUGH", "1", "comfy_passthrough", PassthroughMode.SAFE),
        ("COMFY_PASSTHROUGH", "false", "comfy_passthrough", PassthroughMode.OFF),
        ("COMFY_PASSTHROUGH", "Off", "comfy_passthrough", PassthroughMode.OFF),
        ("COMFY_PASSTHROUGH", "0", "comfy_passthrough", PassthroughMode.OFF),
    ],
)
def test_env_parsed(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str, field: str, expected: Any
) -> None:
    monkeypatch.setenv(name, raw)
    value = getattr(load_settings(), field)
    assert value == expected
    assert type(value) is type(expected)


def test_derived_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIRECT_ADDRESS", "::1")
    monkeypatch.setenv("COMFYUI_PORT_HOST", "9000")
    monkeypatch.setenv("MAX_BODY_SIZE_MB", "2")
    monkeypatch.setenv("OUTPUT_DIR", "/srv/out")
    settings = load_settings()
    assert settings.comfy_url == "http://[::1]:9000"
    assert settings.max_body_size_bytes == 2 * 1024 * 1024
    assert settings.comfy_output_dir == Path("/srv/out")


@pytest.mark.parametrize(
    ("env", "named", "allowed"),
    [
        ({"PORT": "abc"}, "PORT", "integer"),
        ({"PORT": "70000"}, "PORT", "65535"),
        ({"PORT": "0"}, "PORT", "greater than or equal to 1"),
        ({"COMFYUI_PORT_HOST": "-3"}, "COMFYUI_PORT_HOST", "greater than or equal to 1"),
        ({"STARTUP_CHECK_MAX_TRIES": "0"}, "STARTUP_CHECK_MAX_TRIES", "greater than or equal to 1"),
        ({"STARTUP_CHECK_INTERVAL_S": "0"}, "STARTUP_CHECK_INTERVAL_S", "greater than 0"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL", "'debug', 'info', 'warning', 'error'"),
        ({"MAX_BODY_SIZE_MB": "-1"}, "MAX_BODY_SIZE_MB", "greater than 0"),
        ({"MAX_QUEUE_DEPTH": "-1"}, "MAX_QUEUE_DEPTH", "greater than or equal to 0"),
        ({"PROMPT_TIMEOUT_S": "0"}, "PROMPT_TIMEOUT_S", "greater than 0"),
        ({"ALWAYS_RESTART_COMFYUI": "maybe"}, "ALWAYS_RESTART_COMFYUI", "boolean"),
        ({"CMD": "python 'main.py"}, "CMD", "shell command"),
        ({"COMFY_PASSTHROUGH": "all"}, "COMFY_PASSTHROUGH", "'false', 'true' or 'full'"),
        ({"PORT": "8188"}, "PORT", "must differ"),
        ({"PORT": "9000", "COMFYUI_PORT_HOST": "9000"}, "COMFYUI_PORT_HOST", "must differ"),
    ],
)
def test_bad_value_is_named(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str, allowed: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert named in message
    assert allowed in message
    assert "\n" not in message


def test_every_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "abc")
    monkeypatch.setenv("LOG_LEVEL", "loud")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "PORT" in str(caught.value)
    assert "LOG_LEVEL" in str(caught.value)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_config_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = write_config(
        tmp_path, "PORT: 3300\nLOG_LEVEL: DEBUG\nmax_queue_depth: 5\nSOMETHING_ELSE: 1\n"
    )
    monkeypatch.setenv("CONFIG_FILE", str(config))
    settings = load_settings()
    assert (settings.port, settings.log_level, settings.max_queue_depth) == (3300, "debug", 5)


def test_environment_wins_over_config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = write_config(tmp_path, "PORT: 3300\nMAX_QUEUE_DEPTH: 5\n")
    monkeypatch.setenv("CONFIG_FILE", str(config))
    monkeypatch.setenv("PORT", "3400")
    settings = load_settings()
    assert settings.port == 3400
    assert settings.max_queue_depth == 5


def test_empty_config_file_means_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONFIG_FILE", str(write_config(tmp_path, "")))
    assert load_settings().port == 3000


def test_bad_value_in_config_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONFIG_FILE", str(write_config(tmp_path, "PORT: abc\n")))
    with pytest.raises(SettingsError, match="PORT"):
        load_settings()


@pytest.mark.parametrize(
    ("content", "allowed"),
    [
        (None, "cannot be read"),
        ("PORT: [unclosed\n", "cannot be read"),
        ("- PORT\n- 3000\n", "mapping"),
        ("just a string\n", "mapping"),
    ],
    ids=["missing", "not-yaml", "list", "scalar"],
)
def test_bad_config_file_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str | None, allowed: str
) -> None:
    path = tmp_path / "gateway.yaml"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("CONFIG_FILE", str(path))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert "CONFIG_FILE" in str(caught.value)
    assert allowed in str(caught.value)


def test_config_file_that_is_a_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONFIG_FILE", str(tmp_path))
    with pytest.raises(SettingsError, match="CONFIG_FILE"):
        load_settings()


def test_bad_setting_stops_start_up_with_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k.upper() not in VARIABLES}
    env["PORT"] = "abc"
    done = subprocess.run(
        [sys.executable, "-m", "app"],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "PORT" in lines[0]
    assert "integer" in lines[0]
    assert "Traceback" not in done.stderr


def test_no_section_hides_anothers_validator() -> None:
    """Settings inherits each section; a validator name used twice would silently drop one."""
    names = [
        name
        for section in SECTIONS
        for kind in ("field_validators", "model_validators")
        for name in getattr(section.__pydantic_decorators__, kind)
    ]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    assert set(Settings.model_fields) == {f for s in SECTIONS for f in s.model_fields}


def test_an_upload_header_without_prefixes_stops_start_up_saying_how_to_list_them() -> None:
    """It would go to whatever url_prefix a client names: the gateway does not start."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in VARIABLES}
    env["HTTP_UPLOAD_AUTH_HEADER"] = "Authorization: Bearer very-secret-upload-token"
    done = subprocess.run(
        [sys.executable, "-m", "app"], env=env, cwd=PROJECT_ROOT, capture_output=True,
        text=True, timeout=20, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "HTTP_UPLOAD_AUTH_PREFIXES" in line and "https://store.example.com/outputs/" in line
    assert "very-secret-upload-token" not in done.stderr


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"http_upload_auth_prefixes": "store.example.com/out/"}, "not a URL prefix"),
        ({"http_upload_auth_prefixes": "https://store.example.com/a/../b/"}, "not a URL prefix"),
        ({"s3_buckets": "renders,Not_A_Bucket"}, "'Not_A_Bucket' is not an S3 bucket name"),
    ],
)
def test_prefixes_and_buckets_are_checked(values: dict[str, str], problem: str) -> None:
    with pytest.raises(SettingsError, match=problem):
        load_settings(**values)


def test_prefixes_and_buckets_are_comma_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_UPLOAD_AUTH_HEADER", "X-Store-Key: k")
    monkeypatch.setenv("HTTP_UPLOAD_AUTH_PREFIXES", "https://a.example/out/, http://b:9000/")
    monkeypatch.setenv("S3_BUCKETS", "renders, models")
    settings = load_settings()
    assert settings.http_upload_auth_prefixes == ("https://a.example/out/", "http://b:9000/")
    assert settings.s3_buckets == ("renders", "models")
    assert "X-Store-Key" not in repr(settings)  # a SecretStr: no repr shows it


def test_fleet_max_result_mb_still_starts_and_says_it_is_ignored(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FLEET_MAX_RESULT_MB", "0.5")
    settings = load_settings(queue_url="redis://127.0.0.1:6379/0")
    with caplog.at_level("INFO", logger="app.fleet.fleet"):
        log_file_sharing(settings, FileShelf("http://10.0.0.5:3000"))
    said = caplog.text
    assert "FLEET_MAX_RESULT_MB is deprecated and ignored" in said
    assert "FLEET_SECRET is unset" in said and "comfy-gateway:secret" in said
    assert "loopback" not in said


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("FLEET_SECRET", "too-short", "at least 16 characters"),
        ("FLEET_ADVERTISE_URL", "10.0.0.5:3000", "http:// or https:// URL"),
    ],
)
def test_fleet_file_sharing_settings_are_checked(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, words: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=words) as raised:
        load_settings()
    assert name != "FLEET_SECRET" or value not in str(raised.value)
