"""WARMUP_PROMPT_FILE: validated as a setting, read in either format, its checkpoint found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.comfy.graph import checkpoint_of, load_graph
from app.core.settings import SettingsError, load_settings
from app.startup import warmup_checkpoint

GRAPHS = Path(__file__).resolve().parents[1] / "graphs"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "cannot be read"),
        ("{not json", "is not JSON"),
        ("[1, 2]", "must hold a ComfyUI API-format graph"),
    ],
)
def test_a_bad_warmup_file_is_a_settings_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | None, words: str
) -> None:
    path = tmp_path / "warmup.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("WARMUP_PROMPT_FILE", str(path))
    with pytest.raises(SettingsError) as error:
        load_settings()
    assert str(error.value).startswith(f"invalid setting WARMUP_PROMPT_FILE='{path}': ")
    assert words in str(error.value)


def test_empty_means_no_warmup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARMUP_PROMPT_FILE", "")
    settings = load_settings()
    assert settings.warmup_prompt_file is None
    assert warmup_checkpoint(settings) is None


@pytest.mark.parametrize("wrapped", [False, True])
def test_graph_in_api_format_or_wrapped_in_prompt(tmp_path: Path, wrapped: bool) -> None:
    graph = json.loads((GRAPHS / "t2i.json").read_text())
    path = tmp_path / "warmup.json"
    path.write_text(json.dumps({"prompt": graph} if wrapped else graph))
    assert load_graph(path) == graph
    assert checkpoint_of(load_graph(path)) == "tiny-sd15-random.safetensors"


def test_a_ui_format_workflow_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ui.json"
    path.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    with pytest.raises(ValueError, match="has no class_type"):
        load_graph(path)


@pytest.mark.parametrize(
    ("name", "checkpoint"), [("t2i", "tiny-sd15-random.safetensors"), ("g1_empty_save", None)]
)
def test_checkpoint_of(name: str, checkpoint: str | None) -> None:
    assert checkpoint_of(json.loads((GRAPHS / f"{name}.json").read_text())) == checkpoint
