"""Hypothesis against a real gateway: graphs with odd node ids, odd numbers (huge, negative zero,
floats where ints go, NaN and Infinity) and odd strings (control characters, NUL, long, any
code point), and odd Last-Event-IDs. Each is run (200, one image) or refused with a located 400;
never a 5xx, and never a job held afterwards. The tenants' gateway, as its `solo` key (one job
at a time: a job held by a refused request would answer the next one 429).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.harness import Gateway, assert_capacity_whole, graph
from tests.integration.tenants import SOLO, client

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples every run: a failure here is reproducible
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

TEXT = st.text(st.characters(codec="utf-8"), max_size=12)  # any code point but a surrogate
NODE_IDS = st.one_of(
    TEXT,
    st.integers(0, 10**40).map(str),
    st.sampled_from(["²", "³", "\u0663", "007", "5:3", "a.b", "", "\n", "x\x00", "9" * 200]),
)
NUMBERS = st.one_of(
    st.sampled_from([1, 8, 64, 64.0, 63.5, True, 1.0000001]),  # taken, or read as ints
    st.sampled_from([0, -0.0, -1, 16385, 2**64, 10**400, 1e308, -1e308, 5e-324]),
    st.sampled_from([math.nan, math.inf, -math.inf]),  # not JSON: refused as such
    st.integers(-(10**30), 10**30),
    st.floats(),
)
STRINGS = st.one_of(
    TEXT,
    st.text(st.characters(codec="utf-8"), min_size=150, max_size=300),
    st.sampled_from(["a\x00b", "../x", "/abs", "%date:yyyy%", "sub/dir/x", "\U0001f680", "~"]),
)


@pytest.fixture(scope="module")
def gateway(tenant_gateway: Gateway) -> Gateway:
    return tenant_gateway


@pytest.fixture(scope="module")
def solo(gateway: Gateway) -> Iterator[httpx.Client]:
    with client(gateway, SOLO) as c:
        yield c


def holds_nothing(gateway: Gateway) -> bool:
    health = httpx.get(f"{gateway.url}/health", timeout=10).json()
    ready = httpx.get(f"{gateway.url}/ready", timeout=10).json()
    return not any(i["jobs"] for i in health["instances"]) and ready["queue_depth"] == 0


def odd_graph(ids: list[str], width: Any, color: Any, prefix: str, note: str) -> dict[str, Any]:
    first, second = ids
    return {
        first: {
            "class_type": "EmptyImage",
            "inputs": {"width": width, "height": 8, "batch_size": 1, "color": color},
            "_meta": {"title": note},
        },
        second: {
            "class_type": "SaveImage",
            "inputs": {"images": [first, 0], "filename_prefix": prefix, "note": note},
        },
    }


@FUZZ
@given(
    ids=st.lists(NODE_IDS, min_size=2, max_size=2, unique=True),
    width=NUMBERS,
    color=NUMBERS,
    prefix=STRINGS,
    note=STRINGS,
)
def test_odd_graphs_are_run_or_a_located_400(
    gateway: Gateway, solo: httpx.Client, ids: list[str], width: Any, color: Any, prefix: str,
    note: str,
) -> None:  # fmt: skip
    # Python's json writes NaN and Infinity, as a careless client does; the gateway refuses them.
    body = json.dumps({"prompt": odd_graph(ids, width, color, prefix, note)}).encode()
    response = solo.post("/prompt", content=body, headers={"content-type": "application/json"})
    answer = response.json()
    if response.status_code == 200:
        assert len(answer["images"]) == 1
    else:
        assert response.status_code == 400, answer
        assert answer["location"].startswith(("body", "prompt")), answer
    assert holds_nothing(gateway)


# Header values httpx sends as they are: no control characters, no space at either end.
HEADER_BYTES = st.binary(max_size=12).filter(
    lambda b: b.strip(b" \t") == b and not any(c < 0x20 or c == 0x7F for c in b)
)
EVENT_IDS = st.one_of(
    HEADER_BYTES,
    st.integers(0, 10**30).map(lambda n: str(n).encode()),
    st.sampled_from([b"\xb2", b"\xb3\xb9", b"1" * 5000, b"-1", b"1_0", b"0x1", b"1e3"]),
)


@pytest.fixture(scope="module")
def finished_job(solo: httpx.Client) -> str:
    ran = solo.post("/prompt", json={"prompt": graph("g1_empty_save"), "id": "odd-events"})
    assert ran.status_code == 200, ran.text
    return "odd-events"


@FUZZ
@given(value=EVENT_IDS)
def test_odd_last_event_ids_are_read_or_a_located_400(
    gateway: Gateway, solo: httpx.Client, finished_job: str, value: bytes
) -> None:
    response = solo.get(f"/prompt/{finished_job}/events", headers={"Last-Event-ID": value})
    if response.status_code not in (200, 204):
        assert response.status_code == 400, response.text
        assert response.json()["location"] == "Last-Event-ID"


def test_the_gateway_holds_nothing_after_the_odd_input(
    gateway: Gateway, solo: httpx.Client
) -> None:
    assert_capacity_whole(gateway, solo)
