"""A job's models: every model URL in its graph downloaded and replaced by its file name, and a
hold on every downloaded model the graph names, so none is evicted while the job is queued or
running. The job runner (app.jobs.runner) asks, where the job runs.

Which inputs name a model, and in which folder, is app.comfy.model_inputs's table
(`ckpt_name`, `lora_name`, ...); workflow fields reach it through the graphs their modules
build. Errors are located at the input (`prompt.4.inputs.lora_name`).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from app.comfy.graph import Graph
from app.comfy.model_inputs import is_model_url, model_inputs
from app.core.errors import InvalidRequest
from app.core.options import JobOptions
from app.jobs.model_auth import Credentials
from app.jobs.model_cache import Hold
from app.jobs.model_downloads import Spec

if TYPE_CHECKING:
    from app.jobs.model_store import ModelStore

Ref = tuple[str, str, str, str]  # node id, input name, folder, value


async def prepare(
    store: ModelStore, graph: Graph, options: JobOptions | None, owner: str | None
) -> tuple[Graph, Hold]:
    """The graph with its model URLs replaced by files (downloads of the key `owner`), and the
    hold on its downloaded models."""
    refs = list(model_inputs(graph))
    if not refs:
        return graph, Hold(None, [])  # most graphs: nothing to do, nothing to hold
    hold = store.cache.hold([])
    try:
        if any(is_model_url(value) for *_, value in refs):
            graph = await resolve(store, graph, refs, options, hold, owner)
        for _, _, folder, value in model_inputs(graph):
            entry = store.cache.get(folder, value)
            if entry is not None:
                store.cache.touch(entry)
                if entry.key not in hold.keys:
                    hold.add(entry.key)
    except BaseException:
        hold.release()
        raise
    return graph, hold


async def resolve(
    store: ModelStore,
    graph: Graph,
    refs: list[Ref],
    options: JobOptions | None,
    hold: Hold,
    owner: str | None,
) -> Graph:
    """Download every model URL of the graph (each once, shared with other jobs naming it) and
    put its file name in its place. Whether the key may download was asked at the door
    (app.jobs.grants); its buckets are asked again here, where the operator's S3 credentials
    are used (in a fleet: on the gateway that runs the job)."""
    urls = [ref for ref in refs if is_model_url(ref[3])]
    first = f"prompt.{urls[0][0]}.inputs.{urls[0][1]}"
    if not store.enabled:
        raise InvalidRequest(
            f"{first}: model downloads are off on this gateway (MODEL_DOWNLOADS=false): name "
            "an installed file",
            location=first,
        )
    # The runner checked the graph's shape and its destinations first: nothing is fetched for
    # a request that would be refused anyway.
    credentials = store.credentials
    if options is not None and options.model_credentials:
        credentials = Credentials.of(options.model_credentials).before(credentials)
    started = []
    for node_id, name, folder, url in urls:
        where = f"prompt.{node_id}.inputs.{name}"
        await store.check_folder(folder, where)
        store.grants.buckets.check_url(url, where)
        spec = Spec.of(url, folder, None, None, credentials)
        started.append((store.start(spec, credentials, where, owner), where))
    names = await asyncio.gather(*(download.outcome(where, hold) for download, where in started))
    rewritten = dict(graph)
    for (node_id, name, _, _), filename in zip(urls, names, strict=True):
        node = rewritten[node_id]
        rewritten[node_id] = {**node, "inputs": {**node["inputs"], name: filename}}
    return rewritten
