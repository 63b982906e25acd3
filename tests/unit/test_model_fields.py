"""Model URLs where a workflow field or a graph input names a model: the schemas take them, the
availability check lets them through, and the manifest and the input table read them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from app.comfy.catalog import Catalog
from app.comfy.model_inputs import model_folder, model_inputs
from app.models.manifest import read_manifest
from app.registry.availability import check_graph
from app.registry.load import Registry

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CATALOG = Catalog.from_file(FIXTURES / "object_info.json")
TINY = "tiny-sd15-random.safetensors"
URL = "https://models.example.com/sd/dream.safetensors"


def leaf_model(urls: bool, catalog: Catalog = CATALOG) -> Any:
    registry = Registry.load(FIXTURES / "workflows_ok")
    registry.activate(catalog, None, model_urls=urls)
    workflow = next(w for w in registry.workflows if w.name == "nested/deeper/leaf")
    return workflow.input_model


def test_with_downloads_a_model_field_takes_an_installed_file_or_a_url() -> None:
    model = leaf_model(urls=True)
    schema = model.model_json_schema()
    checkpoint = schema["properties"]["checkpoint"]
    assert checkpoint["anyOf"][0] == {"type": "string", "enum": [TINY]}
    assert checkpoint["anyOf"][1]["pattern"] == "^(https?|s3)://"
    lora = schema["$defs"]["NestedDeeperLeafLoraSpec"]["properties"]["name"]
    assert lora["anyOf"][0]["enum"] == ["tiny-lora.safetensors"]
    assert schema["properties"]["sampler_name"]["enum"]  # node choices stay plain enums
    given = model.model_validate(
        {"prompt": "a cat", "checkpoint": URL, "loras": [{"name": URL}], "extra_loras": [URL]}
    )
    assert (given.checkpoint, given.loras[0].name, given.extra_loras) == (URL, URL, [URL])
    s3 = model.model_validate({"prompt": "a cat", "checkpoint": "s3://b/k.ckpt"})
    assert s3.checkpoint == "s3://b/k.ckpt"
    with pytest.raises(ValidationError) as refused:
        model.model_validate({"prompt": "a cat", "checkpoint": "elsewhere.safetensors"})
    [error] = refused.value.errors()
    assert error["loc"] == ("checkpoint",)
    assert f"installed: {TINY}" in error["msg"] and "URL" in error["msg"]
    with pytest.raises(ValidationError):
        model.model_validate({"prompt": "a cat", "checkpoint": "ftp://x.example/a.ckpt"})


def test_without_downloads_a_model_field_is_the_plain_enum() -> None:
    schema = leaf_model(urls=False).model_json_schema()
    assert schema["properties"]["checkpoint"]["enum"] == [TINY]
    with pytest.raises(ValidationError):
        leaf_model(urls=False).model_validate({"prompt": "a cat", "checkpoint": URL})


def test_a_model_url_passes_the_availability_check() -> None:
    graph = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": URL}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "nope.ckpt"}},
    }
    info = copy.deepcopy(CATALOG.object_info)
    reasons = check_graph(graph, info)
    assert "checkpoint nope.ckpt not found" in reasons
    assert not any(URL in reason for reason in reasons)


@pytest.mark.parametrize(
    ("class_type", "name", "folder"),
    [
        ("CheckpointLoaderSimple", "ckpt_name", "checkpoints"),
        ("LoraLoaderModelOnly", "lora_name", "loras"),
        ("Power Lora Loader (custom)", "lora_name", "loras"),  # custom nodes: by the input
        ("CLIPVisionLoader", "clip_name", "clip_vision"),  # the class decides here
        ("CLIPLoader", "clip_name", "text_encoders"),
        ("UpscaleModelLoader", "model_name", "upscale_models"),
        ("SomeNode", "model_name", None),  # ambiguous: not a model input
        ("KSampler", "seed", None),
    ],
)
def test_which_inputs_name_a_model(class_type: str, name: str, folder: str | None) -> None:
    assert model_folder(class_type, name) == folder


def test_model_inputs_skips_links_and_odd_nodes() -> None:
    graph: dict[str, Any] = {
        "1": {"class_type": "LoraLoader", "inputs": {"lora_name": URL, "model": ["2", 0]}},
        "2": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ["9", 0]}},
        "3": "not a node",
    }
    assert list(model_inputs(graph)) == [("1", "lora_name", "loras", URL)]


def test_the_manifest_is_a_list_of_entries(tmp_path: Path) -> None:
    manifest = tmp_path / "models.yaml"
    manifest.write_text(
        f"models:\n  - url: {URL}\n    folder: checkpoints\n"
        "  - url: s3://models/loras/a.safetensors\n    folder: loras\n    filename: b.safetensors\n"
    )
    first, second = read_manifest(manifest)
    assert (first.folder, first.filename, first.pin) == ("checkpoints", "dream.safetensors", True)
    assert (second.url, second.filename) == ("s3://models/loras/a.safetensors", "b.safetensors")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("url: x\n", "must hold a list"),
        ("- https://x.example/a.ckpt\n", "entry 1 is not a mapping"),
        (f"- url: {URL}\n", "entry 1: folder: Field required"),
        (f"- url: {URL}\n  folder: loras\n  sha: abc\n", "entry 1: sha: Extra inputs"),
        ("- url: ftp://x.example/a.ckpt\n  folder: loras\n", "entry 1: url: Value error"),
        ("- [unclosed\n", "cannot be read"),
    ],
)
def test_a_bad_manifest_names_the_entry(tmp_path: Path, text: str, words: str) -> None:
    manifest = tmp_path / "models.yaml"
    manifest.write_text(text)
    with pytest.raises(ValueError) as raised:
        read_manifest(manifest)
    assert words in str(raised.value)


def test_the_a1111_facade_still_reads_the_installed_files_of_a_model_field() -> None:
    from app.compat.a1111.terms import allowed

    assert allowed(leaf_model(urls=True), "checkpoint") == [TINY]
    assert allowed(leaf_model(urls=False), "checkpoint") == [TINY]
