"""Reading a gateway's answers: its Server-Sent Events, and its errors for people."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx


def read_events(response: httpx.Response) -> Iterator[tuple[str, Any]]:
    """Yield (event, data) from a Server-Sent Events response."""
    event, data = "message", ""
    for line in response.iter_lines():
        if not line:
            if data:
                yield event, json.loads(data)
            event, data = "message", ""
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data += line[5:].strip()


def describe(response: httpx.Response) -> str:
    """An error answer in one line: its message and where in the request."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and "error" in body:
        where = f" (at {body['location']})" if body.get("location") else ""
        return f"{body['error']}{where}"
    return json.dumps(body)[:500]
