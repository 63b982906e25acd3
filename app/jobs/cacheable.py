"""Whether a graph's result may be served again: it must not depend on chance or on the world.

A graph in ComfyUI's API format carries its seeds as numbers (the editor's "randomize" happens
in the editor, before the graph is sent), so most graphs give the same files every time. A graph
is *random*, and never served from the result cache, when

- an input named like a seed (`seed`, `noise_seed`, any name ending in `seed`) is missing its
  value (null), is negative (-1 is "random" to AUTOMATIC1111 and to seed nodes such as rgthree's),
  or is a string other than a whole number ("random", "randomize");
- it carries the editor's seed widget (`control_after_generate` or `control_before_generate`)
  set to anything but `fixed`: the client asked for a new seed per run;
- it has a node whose output changes between runs by design: `WebcamCapture`, or a node whose
  class name says `Random` and that takes no seed (`RandomNoise` takes `noise_seed`, so it is
  reproducible).

A graph has *external* inputs when a value is an http(s) URL (what it names may change; so may a
model named by an `s3://` URL), or a loader input (the LoadImage family, app.jobs.inputs) names
a file in ComfyUI's input folder (which may be replaced). Those are cached only when the caller
says so. Base64 inputs are part of the request, and so of its digest: they are fine.
"""

from __future__ import annotations

import re
from typing import Any

from app.comfy.model_inputs import is_model_url
from app.jobs.inputs import FILENAME, LOADERS

SEED_WIDGETS = ("control_after_generate", "control_before_generate")
ALWAYS_CHANGING = frozenset({"WebcamCapture"})
RANDOM_CLASS = re.compile("random", re.IGNORECASE)


def is_seed_name(name: str) -> bool:
    return name.lower().endswith("seed")


def random_reason(graph: dict[str, Any]) -> str | None:
    """Why the graph's result may differ from run to run, naming the input; None if it may not."""
    for node_id, node in graph.items():
        if not isinstance(node, dict):
            continue
        class_type = str(node.get("class_type", ""))
        inputs = _inputs(node)
        at = f"prompt.{node_id}"
        seeded = any(is_seed_name(name) for name in inputs)
        if class_type in ALWAYS_CHANGING or (RANDOM_CLASS.search(class_type) and not seeded):
            return f"{at} ({class_type}) gives a different result on every run"
        for name, value in inputs.items():
            if is_seed_name(name) and _random_seed(value):
                return f"{at}.inputs.{name} is a random seed ({value!r})"
            if name in SEED_WIDGETS and value != "fixed":
                return f"{at}.inputs.{name} is {value!r}: a new seed on every run"
    return None


def _inputs(node: dict[str, Any]) -> dict[str, Any]:
    inputs = node.get("inputs")
    return inputs if isinstance(inputs, dict) else {}


def _random_seed(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False  # a toggle that happens to be called "...seed"; not a seed value
    if isinstance(value, int | float):
        return value < 0
    if isinstance(value, str):
        return not value.strip().isdigit()
    return False  # a link: the node it comes from is checked on its own


def external_reason(graph: dict[str, Any]) -> str | None:
    """Why the graph reads something outside the request (a URL, an input file); else None."""
    for node_id, node in graph.items():
        if not isinstance(node, dict):
            continue
        inputs = _inputs(node)
        loaders = LOADERS.get(str(node.get("class_type", "")), {})
        for name, value in inputs.items():
            if not isinstance(value, str):
                continue
            at = f"prompt.{node_id}.inputs.{name}"
            if value[:8].lower().startswith(("http://", "https://")) or is_model_url(value):
                return f"{at} is fetched from a URL"
            if name in loaders and FILENAME.match(value):
                return f"{at} names a file in ComfyUI's input folder"
    return None


def uncacheable_reason(graph: dict[str, Any], *, external_ok: bool = False) -> str | None:
    """Why this graph's result must not be served from the cache, or None when it may be."""
    return random_reason(graph) or (None if external_ok else external_reason(graph))
