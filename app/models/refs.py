"""A graph's model references: which inputs name a model URL, the graph with each URL replaced
by its file, and a job's hold on every downloaded model its graph names.

Which inputs name a model, and in which folder, is app.comfy.model_inputs's table (`ckpt_name`,
`lora_name`, ...); workflow fields reach it through the graphs their modules build. The model
store (app.models.store.ModelStore.prepare) downloads the URLs; errors are located at the input
(`prompt.4.inputs.lora_name`).
"""

from __future__ import annotations

from collections.abc import Iterable

from app.comfy.graph import Graph
from app.comfy.model_inputs import is_model_url, model_inputs
from app.models.cache import Hold, ModelCache

Ref = tuple[str, str, str, str]  # node id, input name, folder, value


def url_refs(refs: Iterable[Ref]) -> list[Ref]:
    """The references that name a model by URL."""
    return [ref for ref in refs if is_model_url(ref[3])]


def where_of(ref: Ref) -> str:
    """The request's location of a reference: `prompt.4.inputs.lora_name`."""
    return f"prompt.{ref[0]}.inputs.{ref[1]}"


def with_files(graph: Graph, urls: list[Ref], names: list[str]) -> Graph:
    """The graph with each URL reference replaced by its file's name (a new graph)."""
    rewritten = dict(graph)
    for (node_id, name, _, _), filename in zip(urls, names, strict=True):
        node = rewritten[node_id]
        rewritten[node_id] = {**node, "inputs": {**node["inputs"], name: filename}}
    return rewritten


def hold_named(cache: ModelCache, graph: Graph, hold: Hold) -> None:
    """Hold (and mark used) every downloaded model the graph names."""
    for _, _, folder, value in model_inputs(graph):
        entry = cache.get(folder, value)
        if entry is not None:
            cache.touch(entry)
            if entry.key not in hold.keys:
                hold.add(entry.key)
