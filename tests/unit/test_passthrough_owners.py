"""Whose ids are whose in the passthrough: prompt ids and clientIds held by the first key that
used them, the ids a prompt's body gives as ComfyUI reads them, a key's socket hearing only its
own prompts, and a request body that must arrive in time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.compat.comfy.owners import ClientIds, SubmittedPrompts
from app.compat.comfy.request import within
from app.compat.comfy.submit import canonical_id, check_order, client_of
from app.compat.comfy.ws import EventFilter
from app.core.errors import Conflict, InvalidRequest, RequestTimeout

ID = "0f9d8c61-6a0e-4c4e-9d54-3a5e3b6c2f10"


def test_an_id_is_held_by_the_first_key_that_used_it() -> None:
    gateway_jobs = {"g"}
    submitted = SubmittedPrompts(limit=3, foreign=gateway_jobs.__contains__)
    assert submitted.claim(ID, "alice") is True
    assert submitted.claim(ID, "alice") is False  # hers already: nothing to let go
    with pytest.raises(Conflict) as taken:
        submitted.claim(ID, "bob")
    assert (taken.value.status, taken.value.location) == (409, "prompt_id")
    with pytest.raises(Conflict, match="in use by the gateway"):
        submitted.claim("g", "alice")
    assert ID in submitted.of("alice") and ID not in submitted.of("bob")
    submitted.release(ID)
    assert submitted.claim(ID, "bob") is True  # let go (ComfyUI refused it): free again


def test_client_ids_are_held_the_same_way() -> None:
    clients = ClientIds(foreign={"gateway-sid"}.__contains__)
    clients.claim("sid", "alice")
    with pytest.raises(Conflict) as taken:
        clients.claim("sid", "bob", "extra_data.client_id")
    assert taken.value.location == "extra_data.client_id"
    with pytest.raises(Conflict):
        clients.claim("gateway-sid", None)
    clients.claim("sid", "alice")  # her socket again


@pytest.mark.parametrize(
    "given", [ID.upper(), ID.replace("-", ""), f"{{{ID}}}", f"urn:uuid:{ID}", "", "x", 5, None, []]
)
def test_a_prompt_id_is_a_canonical_uuid(given: Any) -> None:
    with pytest.raises(InvalidRequest) as refused:
        canonical_id(given)
    assert refused.value.location == "prompt_id"
    assert canonical_id(ID) == ID


@pytest.mark.parametrize(
    ("body", "found"),
    [
        ({}, (None, "extra_data.client_id")),
        ({"client_id": "a", "extra_data": {"client_id": "b"}}, ("a", "client_id")),
        ({"extra_data": {"client_id": "b"}}, ("b", "extra_data.client_id")),
    ],
)
def test_the_client_id_is_read_as_comfyui_reads_it(
    body: dict[str, Any], found: tuple[str | None, str]
) -> None:
    assert client_of(body) == found


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({"client_id": 5}, "client_id"),
        ({"extra_data": []}, "extra_data"),
        ({"extra_data": {"client_id": ["x"]}}, "extra_data.client_id"),
    ],
)
def test_a_client_id_that_is_no_string_is_refused(body: dict[str, Any], location: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        client_of(body)
    assert refused.value.location == location


@pytest.mark.parametrize(("body", "location"), [({"number": 0}, "number"), ({"front": 1}, "front")])
def test_a_prompt_keeps_its_place_in_the_queue(body: dict[str, Any], location: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_order(body)
    assert refused.value.location == location
    check_order({"front": False})


def test_a_keys_socket_passes_only_its_own_prompts() -> None:
    events = EventFilter({"mine"})

    def event(kind: str, **data: Any) -> str:
        return json.dumps({"type": kind, "data": data})

    assert events.passes(event("status", status={}, sid="s"))
    assert events.passes(event("progress", value=1, max=2, prompt_id="mine"))
    assert events.passes(b"preview of mine")  # follows an event of its own prompt
    assert not events.passes(event("progress_state", prompt_id="theirs", nodes={}))
    assert not events.passes(b"preview of theirs")
    assert not events.passes(event("executing", node=None, prompt_id=None))
    assert not events.passes("not JSON")
    assert events.passes(event("executed", node="9", output={}, prompt_id="mine"))


async def test_a_body_must_arrive_in_time() -> None:
    async def trickle() -> AsyncIterator[bytes]:
        yield b"{"
        await asyncio.sleep(10)
        yield b"}"

    received = []
    with pytest.raises(RequestTimeout) as late:
        async for chunk in within(trickle(), 0.2):
            received.append(chunk)
    assert received == [b"{"] and late.value.status == 408

    async def quick() -> AsyncIterator[bytes]:
        for part in (b"a", b"b"):
            yield part

    assert [c async for c in within(quick(), 5)] == [b"a", b"b"]
