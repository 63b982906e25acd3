"""The result cache's parts: canonical JSON and the digest, the LRU's bound, what is random."""

from __future__ import annotations

import gc
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from app.core.metrics import GatewayMetrics
from app.core.outcome import JobOutcome, ResultFile
from app.core.remote_file import RemoteFile
from app.jobs.cacheable import external_reason, random_reason, uncacheable_reason
from app.jobs.canonical import canonical_json, digest, number
from app.jobs.result_cache import ENTRY_OVERHEAD_BYTES, CachedResult, ResultCache
from app.jobs.spool import Spooled

# -- canonical JSON (RFC 8785) ----------------------------------------------------------------


def test_rfc8785_example_gives_the_rfc_bytes() -> None:
    # RFC 8785 section 3.2.3, byte for byte.
    given = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_json(json.loads(given)) == expected.encode()


def test_keys_sort_by_utf16_code_units_as_rfc8785_says() -> None:
    # RFC 8785 section 3.2.3's sorting example: the emoji (a surrogate pair, D83D) sorts
    # before U+FB33, though its code point is higher.
    keys = ["\u20ac", "\r", "\ufb33", "1", "\U0001f600", "\u0080", "\u00f6"]
    ordered = list(json.loads(canonical_json(dict.fromkeys(keys, 0))))
    assert ordered == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]


@pytest.mark.parametrize(
    ("bits", "text"),
    [  # RFC 8785 appendix B: IEEE 754 bit patterns and what JCS writes for them
        (0x0000000000000000, "0"),
        (0x8000000000000000, "0"),
        (0x0000000000000001, "5e-324"),
        (0x8000000000000001, "-5e-324"),
        (0x7FEFFFFFFFFFFFFF, "1.7976931348623157e+308"),
        (0x4340000000000000, "9007199254740992"),
        (0xC340000000000000, "-9007199254740992"),
        (0x4430000000000000, "295147905179352830000"),
        (0x44B52D02C7E14AF5, "9.999999999999997e+22"),
        (0x44B52D02C7E14AF6, "1e+23"),
        (0x444B1AE4D6E2EF4F, "999999999999999900000"),
        (0x444B1AE4D6E2EF50, "1e+21"),
        (0x3EB0C6F7A0B5ED8C, "9.999999999999997e-7"),
        (0x3EB0C6F7A0B5ED8D, "0.000001"),
        (0x41B3DE4355555553, "333333333.3333332"),
        (0x41B3DE4355555554, "333333333.33333325"),
        (0x41B3DE4355555555, "333333333.3333333"),
        (0x41B3DE4355555556, "333333333.3333334"),
        (0x4100000000000000, "131072"),
        (0x3FB999999999999A, "0.1"),
    ],
)
def test_numbers_are_written_as_ecmascript_writes_them(bits: int, text: str) -> None:
    assert number(struct.unpack(">d", bits.to_bytes(8, "big"))[0]) == text


def test_integers_stay_exact_past_two_to_the_53() -> None:
    # ComfyUI seeds go to 2**64; JCS proper would round both of these to one double.
    assert canonical_json(2**64 - 1) == b"18446744073709551615"
    assert digest({"seed": 2**64 - 1}) != digest({"seed": 2**64 - 2})


def test_the_digest_ignores_key_order_whitespace_and_the_float_spelling_of_an_integer() -> None:
    a = json.loads('{"2": {"inputs": {"b": 1.0, "a": "x"}, "class_type": "N"}, "1": {}}')
    b = json.loads('{ "1" : { },"2":{"class_type":"N","inputs":{"a":"x","b":1}}}')
    assert digest(a) == digest(b)
    assert digest(a) != digest({**a, "1": {"x": 1}})
    assert len(digest(a)) == 64 and digest(a) == digest(a).lower()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), {1: "x"}, {"x": object()}, "\ud800"])
def test_what_json_cannot_carry_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        canonical_json(bad)


# -- the LRU -----------------------------------------------------------------------------------


def result(size: int, name: str = "a.png") -> CachedResult:
    return CachedResult((ResultFile.of_bytes(name, b"x" * size),))


def test_a_result_costs_its_bytes_its_names_and_a_fixed_overhead() -> None:
    entry = CachedResult(
        (ResultFile.of_bytes("a.png", b"12345"), ResultFile.of_bytes("bb.png", b"1"))
    )
    assert entry.size == 5 + 5 + 1 + 6 + ENTRY_OVERHEAD_BYTES


def test_the_least_recently_used_goes_first_and_the_bound_holds() -> None:
    cache = ResultCache(max_bytes=3 * (1000 + 5 + ENTRY_OVERHEAD_BYTES))
    for key in "abc":
        assert cache.put(key, result(1000))
    assert cache.get("a") is not None  # now b is the least recently used
    assert cache.put("d", result(1000))
    assert "b" not in cache and {"a", "c", "d"} == {k for k in "abcd" if k in cache}
    assert cache.bytes == 3 * result(1000).size <= cache.max_bytes
    assert cache.put("e", result(2500))  # needs the room of two: c, then a (used before d)
    assert [k for k in "acde" if k in cache] == ["d", "e"]
    assert cache.bytes <= cache.max_bytes and len(cache) == 2


def test_a_result_larger_than_the_whole_cache_is_not_kept_and_evicts_nothing() -> None:
    cache = ResultCache(max_bytes=4000)
    cache.put("small", result(10))
    assert not cache.put("huge", result(5000))
    assert "huge" not in cache and "small" in cache


def test_replacing_a_key_counts_its_bytes_once() -> None:
    cache = ResultCache(max_bytes=10_000)
    cache.put("k", result(100))
    cache.put("k", result(300))
    assert cache.bytes == result(300).size and len(cache) == 1


def test_lookups_and_size_are_counted_in_the_metrics() -> None:
    metrics = GatewayMetrics("test")
    cache = ResultCache(max_bytes=10_000)
    cache.metrics = metrics
    cache.get("k")
    cache.put("k", result(100))
    cache.get("k")
    cache.bypassed()
    value = metrics.registry.get_sample_value
    assert value("comfy_gateway_result_cache_lookups_total", {"outcome": "hit"}) == 1
    assert value("comfy_gateway_result_cache_lookups_total", {"outcome": "miss"}) == 1
    assert value("comfy_gateway_result_cache_lookups_total", {"outcome": "bypass"}) == 1
    assert value("comfy_gateway_result_cache_bytes") == result(100).size
    assert value("comfy_gateway_result_cache_entries") == 1


def test_a_result_is_built_from_a_jobs_outcome() -> None:
    outcome = JobOutcome("j", {}, (ResultFile.of_bytes("a.png", b"hello"),))
    built = CachedResult.of(outcome)
    assert built.files == outcome.files  # the same files, by reference: nothing copied
    answered = built.outcome("k", {}, outcome.stats)
    assert [(f.name, f.content) for f in answered.files] == [("a.png", "aGVsbG8=")]


def test_a_spooled_file_lives_while_the_cache_holds_it_and_counts_by_its_size(
    tmp_path: Path,
) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(b"x" * 5000)
    file = ResultFile("big.png", 5000, path=path, keeper=Spooled(path))
    cache = ResultCache(max_bytes=2 * (5000 + 7 + ENTRY_OVERHEAD_BYTES))
    cache.put("k", CachedResult.of(JobOutcome("j", {}, (file,))))
    assert cache.bytes == 5000 + len("big.png") + ENTRY_OVERHEAD_BYTES
    del file  # the job's record let go: the cache alone keeps the spooled file
    gc.collect()
    hit = cache.get("k")
    assert hit is not None and path.exists()
    assert b"".join(hit.files[0].iter_chunks()) == b"x" * 5000
    del hit
    cache.put("l", result(5000))
    cache.put("m", result(5000))  # "k" is evicted: its file goes with it
    gc.collect()
    assert "k" not in cache and not path.exists()


def test_an_answer_whose_files_lie_with_another_gateway_of_the_fleet_is_not_kept() -> None:
    remote = RemoteFile("http://10.0.0.5:3000/internal/fleet/files/t", "fleet-secret-0123456789")
    cache = ResultCache(1 << 20)
    assert not cache.put("k", CachedResult((ResultFile("a.png", 3, remote=remote),)))
    assert "k" not in cache and cache.put(
        "k", CachedResult((ResultFile.of_bytes("a.png", b"abc"),))
    )


# -- what may be cached ------------------------------------------------------------------------


def sampler(**inputs: Any) -> dict[str, Any]:
    return {"5": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 2, **inputs}}}


@pytest.mark.parametrize(
    ("graph", "where"),
    [
        (sampler(seed=-1), "prompt.5.inputs.seed"),
        (sampler(seed=None), "prompt.5.inputs.seed"),
        (sampler(seed="randomize"), "prompt.5.inputs.seed"),
        (sampler(seed="-1"), "prompt.5.inputs.seed"),
        (
            {"9": {"class_type": "SamplerCustom", "inputs": {"noise_seed": -1}}},
            "prompt.9.inputs.noise_seed",
        ),
        (sampler(control_after_generate="randomize"), "prompt.5.inputs.control_after_generate"),
        (sampler(control_after_generate="increment"), "prompt.5.inputs.control_after_generate"),
        (sampler(control_before_generate="decrement"), "prompt.5.inputs.control_before_generate"),
        ({"3": {"class_type": "WebcamCapture", "inputs": {"image": "x.png"}}}, "prompt.3"),
        ({"3": {"class_type": "Random Number", "inputs": {"minimum": 0}}}, "prompt.3"),
    ],
)
def test_random_graphs_are_named_with_the_input_that_makes_them_so(
    graph: dict[str, Any], where: str
) -> None:
    reason = random_reason(graph)
    assert reason is not None and reason.startswith(where)
    assert uncacheable_reason(graph, external_ok=True) == reason  # the caller cannot override


@pytest.mark.parametrize(
    "graph",
    [
        sampler(seed=0),
        sampler(seed=2**64 - 1),
        sampler(seed="42"),
        sampler(seed=["7", 0]),  # a link: the node it comes from is judged on its own
        sampler(control_after_generate="fixed"),
        {"7": {"class_type": "RandomNoise", "inputs": {"noise_seed": 5}}},
        {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "color": 0}}},
        {"1": {"class_type": "X", "inputs": {"use_seed": True}}},
    ],
)
def test_fixed_seeds_are_not_random(graph: dict[str, Any]) -> None:
    assert random_reason(graph) is None


@pytest.mark.parametrize(
    ("inputs", "class_type", "external"),
    [
        ({"image": "https://example.com/a.png"}, "LoadImage", True),
        ({"url": "HTTP://example.com/a.png"}, "SomeCustomLoader", True),
        ({"image": "photo.png"}, "LoadImage", True),
        ({"image": "sub/clip.mp4"}, "LoadImage", True),
        ({"image": "iVBORw0KGgoAAAANSUhEUgAAAAE"}, "LoadImage", False),  # base64: in the body
        ({"image": "data:image/png;base64,iVBORw0KGgo"}, "LoadImage", False),
        ({"text": "a photo.png of a cat"}, "CLIPTextEncode", False),
        ({"ckpt_name": "model.safetensors"}, "CheckpointLoaderSimple", False),
    ],
)
def test_urls_and_input_files_are_external_unless_the_caller_allows_them(
    inputs: dict[str, Any], class_type: str, external: bool
) -> None:
    graph = {"1": {"class_type": class_type, "inputs": inputs}}
    assert (external_reason(graph) is not None) is external
    assert (uncacheable_reason(graph) is not None) is external
    assert uncacheable_reason(graph, external_ok=True) is None
