"""Which files a graph may name (app.jobs.input_names): the rules a key's jobs pass at the door
and on the passthrough, and what they leave alone."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.errors import InvalidRequest
from app.core.keys import ANONYMOUS, Caller, key_folder
from app.jobs.input_names import check_names

ALICE = Caller("alice", named=True)
ADMIN = Caller("ops", named=True, admin=True)
OWN = key_folder("alice")
BOBS = key_folder("bob")


def node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"1": {"class_type": class_type, "inputs": inputs}}


def refused(graph: dict[str, Any], caller: Caller, *, names_only: bool = False) -> str | None:
    """The location of the refusal, or None when the graph passes."""
    try:
        check_names(graph, caller, names_only=names_only)
    except InvalidRequest as e:
        assert e.status == 400
        return e.location
    return None


@pytest.mark.parametrize(
    "graph",
    [
        node("LoadImage", image="x.png [output]"),
        node("LoadImageOutput", image="x.png [output]"),
        node("SomeCustomLoader", path="x.png[temp]"),
        node("CLIPTextEncode", text="a cat [input]"),  # a text ending so: the price
        node("Load3D", image={"image": "x.png [output]", "mask": "m.png"}),
        node("LoadImage", image=f"{BOBS}/x.png"),
        node("SomeCustomLoader", path=f"{BOBS}\\x.png"),
        node("LoadImage", image="gw-0123abcd/1.png"),  # another job's inputs
        node("LoadImageDataSetFromFolder", folder=BOBS),
        node("LoadLatent", latent="../output/x.latent"),
        node("LoadImageDataSetFromFolder", folder="/etc"),
        node("SaveImageDataSetToFolder", folder_name=f"../input/{OWN}"),  # 0.3 would write there
        node("SomeCustomSaver", path=f"../input/{BOBS}/x.png"),
        node("Painter", mask="x.png [output]"),
    ],
)
def test_a_key_names_only_what_is_its_own_or_shared(graph: dict[str, Any]) -> None:
    assert refused(graph, ALICE) == "prompt.1.inputs." + next(iter(graph["1"]["inputs"]))
    assert refused(graph, ADMIN) is None


@pytest.mark.parametrize(
    "graph",
    [
        node("LoadImage", image="example.png"),
        node("LoadImage", image=f"{OWN}/album/x.png"),
        node("LoadImage", image="3d/model.png"),  # a folder the operator made: shared
        node("LoadImage", image="https://example.com/x.png"),
        node("LoadImage", image="/9j/4AAQSkZJRgABAQ"),  # base64: app.jobs.inputs decides
        node("LoadImageDataSetFromFolder", folder=OWN),
        node("CLIPTextEncode", text="a cat [output], at night"),
        node("CLIPTextEncode", text="gw-3000 robot"),
        node("CLIPTextEncode", text="../ and /etc in a prompt"),
        node("SaveImage", images=["gw-x [output]", 0], filename_prefix="out"),  # a link
    ],
)
def test_what_a_key_may_name(graph: dict[str, Any]) -> None:
    assert refused(graph, ALICE) is None


def test_without_keys_only_paths_out_of_the_input_folder_are_refused() -> None:
    assert refused(node("LoadImage", image="x.png [output]"), ANONYMOUS) is None
    assert refused(node("LoadImage", image=f"{BOBS}/x.png"), ANONYMOUS) is None
    assert refused(node("LoadLatent", latent="/abs/x.latent"), ANONYMOUS) == (
        "prompt.1.inputs.latent"
    )


@pytest.mark.parametrize("value", ["../output/x.png", "/abs/x.png", "C:\\x.png", "a/../../b.png"])
def test_through_the_passthrough_every_loader_holds_a_relative_path(value: str) -> None:
    graph = node("LoadImage", image=value)
    assert refused(graph, ANONYMOUS, names_only=True) == "prompt.1.inputs.image"
    assert refused(graph, ANONYMOUS) is None  # a job's loaders: app.jobs.inputs refuses paths


def test_a_malformed_graph_is_left_to_the_shape_check() -> None:
    for graph in ([], {"1": "x"}, {"1": {"class_type": "X", "inputs": []}}):
        assert refused(graph, ALICE) is None  # type: ignore[arg-type]
