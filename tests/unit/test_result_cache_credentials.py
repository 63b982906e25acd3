"""A request that brings its own credentials never meets the result cache: what it makes may
come from a source only those credentials open, and a later request answered from the cache
would get it without proving access as the model store makes it prove (app.models.proof)."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.keys import Caller
from app.core.options import JobOptions
from app.core.outcome import ResultFile
from app.jobs.result_cache import CachedResult, ResultCache
from app.routes.respond import CacheAsk, CacheUse

MODEL_URL = "https://models.example.com/private/lora.safetensors"
GRAPH = {"10": {"class_type": "LoraLoader", "inputs": {"lora_name": MODEL_URL, "model": ["4", 0]}}}
BEARER = {"type": "bearer", "token": "t"}
THEIRS = [{"url_pattern": "https://models.example.com/**", "auth": BEARER}]
OURS = {"https://models.example.com/private/": "t"}


def decide(store: ResultCache, **options: Any) -> CacheUse:
    ask = CacheAsk(store, external_ok=True)  # cache_external_inputs: the URL alone does not stop it
    return CacheUse.decide(
        Caller(None), JobOptions.model_validate(options), GRAPH, ask, streaming=False
    )


@pytest.mark.parametrize("credentials", [{"credentials": THEIRS}, {"model_credentials": OURS}])
def test_a_request_with_its_own_credentials_is_neither_served_nor_kept(
    credentials: dict[str, Any],
) -> None:
    store = ResultCache(1 << 20)
    plain = decide(store)
    assert plain.key is not None and plain.status == "comfy-gateway; fwd=miss"
    result = CachedResult((ResultFile.of_bytes("a.png", b"made with credentials"),))
    use = decide(store, **credentials)
    assert use.status == "comfy-gateway; fwd=bypass; detail=credentials"
    use.keep(result)
    assert len(store) == 0 and decide(store).hit is None  # a later request finds nothing
    plain.keep(CachedResult((ResultFile.of_bytes("a.png", b"public"),)))
    assert decide(store, **credentials).hit is None  # nor does it read another's answer


def test_without_credentials_the_same_graph_is_cached() -> None:
    store = ResultCache(1 << 20)
    decide(store).keep(CachedResult((ResultFile.of_bytes("a.png", b"x"),)))
    assert decide(store).hit is not None
