"""The passthrough's POST /prompt: its body read as ComfyUI reads it, checked, and rebuilt.

ComfyUI files a prompt under the `prompt_id` its client gives (0.3 takes any value and makes a
string of it, so `5` and `"5"` are one id and `null` is `"None"`; 0.33 takes a canonical UUID),
over whatever prompt had it: its history entry, its files, what /interrupt stops. So, for every
caller but an admin key (COMFY_PASSTHROUGH=true):

- a given `prompt_id` is a UUID in canonical lowercase form (400), and it is a 409 when another
  key or a gateway job holds it, or when ComfyUI already has it in its queue or history and it
  is not the caller's (a gateway restarted since, or an id that went past the bound). Without
  one, the gateway picks one, so that every prompt is its key's before ComfyUI sees it; a prompt
  ComfyUI refuses lets a new id go again.
- the client id its events go to (`client_id`, else `extra_data.client_id`, as ComfyUI reads
  them) is a string, held for the key as a websocket's is (app.compat.comfy.ws): 409 when it
  is another key's or one of the gateway's own event streams.
- `number` and a true `front` are 400s: they would run the prompt before other keys' and the
  gateway's jobs.
- the graph's file names pass app.jobs.input_names, as every job's graph does.
- `extra_data.api_key_comfy_org` (a partner-node key) is a short printable string (400); it
  goes on with the rest of `extra_data`, which ComfyUI keeps out of its queue and history.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.compat.comfy.reads import entry, fetch
from app.compat.comfy.rules import Unreadable, read_json
from app.compat.comfy.state import Passthrough
from app.core.errors import Conflict, InvalidRequest
from app.core.keys import Caller
from app.core.options import partner_key_problem
from app.gateway import Gateway
from app.jobs.input_names import check_names


@dataclass(frozen=True)
class Submission:
    """A prompt ready for ComfyUI: the body to send, its id, and whether the id is new."""

    body: bytes
    prompt_id: str
    claimed: bool  # held for the first time by this request: let go if ComfyUI refuses


async def submission(
    body: bytes | None,
    headers: Iterable[tuple[str, str]],
    caller: Caller,
    passthrough: Passthrough,
    gateway: Gateway,
) -> Submission:
    """The prompt's body as it goes on, its ids held for the caller; a 400 or 409 else."""
    try:
        data = read_json(body, headers)
    except Unreadable as e:
        raise InvalidRequest(f"POST /prompt: the body cannot be read ({e})") from None
    if not isinstance(data, dict):
        raise InvalidRequest("POST /prompt: the body must be a JSON object")
    check_order(data)
    check_names(data.get("prompt"), caller, names_only=True)
    client_id, where = client_of(data)
    given = data.get("prompt_id")
    prompt_id = str(uuid.uuid4()) if given is None else canonical_id(given)
    claimed = passthrough.submitted.claim(prompt_id, caller.id)
    try:
        if client_id is not None:
            passthrough.clients.claim(client_id, caller.id, where)
        if given is not None and claimed and await known(gateway, prompt_id):
            raise Conflict(
                f"prompt_id {prompt_id!r} is already in ComfyUI's queue or history: choose a "
                "new one, or leave it out and one is chosen",
                location="prompt_id",
            )
    except BaseException:
        if claimed:
            passthrough.submitted.release(prompt_id)
        raise
    rebuilt = json.dumps({**data, "prompt_id": prompt_id}).encode()
    return Submission(rebuilt, prompt_id, claimed)


def check_order(data: dict[str, Any]) -> None:
    if "number" in data:
        raise InvalidRequest(
            "number would place the prompt in ComfyUI's queue before other clients' and the "
            "gateway's: leave it out",
            location="number",
        )
    if data.get("front"):
        raise InvalidRequest(
            "front would run the prompt before other clients' and the gateway's: leave it out",
            location="front",
        )


def client_of(data: dict[str, Any]) -> tuple[str | None, str]:
    """The client id ComfyUI sends the prompt's events to, and where the body gives it."""
    extra = data.get("extra_data", {})
    if not isinstance(extra, dict):
        raise InvalidRequest("extra_data must be a JSON object", location="extra_data")
    where = "client_id" if "client_id" in data else "extra_data.client_id"
    given = data["client_id"] if "client_id" in data else extra.get("client_id")
    if given is not None and not isinstance(given, str):
        raise InvalidRequest(f"{where} must be a string", location=where)
    check_partner_key(extra)
    return given, where


def check_partner_key(extra: dict[str, Any]) -> None:
    """A partner-node key goes on to ComfyUI as it is, if it can be one (its value never echoed)."""
    where = "extra_data.api_key_comfy_org"
    key = extra.get("api_key_comfy_org")
    if key is None:
        return
    problem = "must be a string" if not isinstance(key, str) else partner_key_problem(key)
    if problem is not None:
        raise InvalidRequest(f"{where} {problem}", location=where)


def canonical_id(given: Any) -> str:
    """A client's prompt_id, if it is a UUID in canonical form (as ComfyUI 0.33 requires)."""
    try:
        if isinstance(given, str) and str(uuid.UUID(given)) == given:
            return given
    except ValueError:
        pass
    raise InvalidRequest(
        "prompt_id must be a UUID in canonical lowercase form (e.g. "
        f"{uuid.uuid4()}), or left out so that one is chosen",
        location="prompt_id",
    )


async def known(gateway: Gateway, prompt_id: str) -> bool:
    """Whether ComfyUI has this prompt in its queue or its history."""
    if await entry(gateway, prompt_id) is not None:
        return True
    status, raw, _ = await fetch(gateway, "/queue")
    try:
        queue = json.loads(raw) if status == 200 else {}
        items = [*queue.get("queue_running", []), *queue.get("queue_pending", [])]
        return any(isinstance(i, list) and len(i) > 1 and i[1] == prompt_id for i in items)
    except (ValueError, AttributeError, TypeError):
        return True  # unknown is not free
