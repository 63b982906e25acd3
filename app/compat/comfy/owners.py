"""Whose ids are whose in the passthrough: prompt ids and websocket client ids, each held by the
API key that used it first (None without keys: the one caller).

ComfyUI lets a client choose both. A prompt id names a history entry, its files and what
/interrupt stops; a client id names the socket ComfyUI sends a prompt's events to (and the newest
socket of a client id takes them from an older one). So a key that used another key's id would
take over that key's prompt or its events: an id held by another key, or by the gateway's own
jobs and event streams, is a 409. The oldest ids go past a bound (SUBMITTED_MAX, CLIENT_IDS_MAX);
one used again moves to the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from app.core.bounded import BoundedMap
from app.core.errors import Conflict

SUBMITTED_MAX = 10_000
CLIENT_IDS_MAX = 10_000


class Claims:
    """Ids, each with the key that holds it; `foreign` ids are the gateway's own."""

    what = "id"

    def __init__(self, limit: int, *, foreign: Callable[[str], bool] = lambda _: False) -> None:
        self.limit = limit
        self.foreign = foreign
        self._ids: BoundedMap[str, str | None] = BoundedMap(limit)

    def claim(self, given: str, owner: str | None, location: str | None = None) -> bool:
        """Hold `given` for `owner`; True when it was not held before (so that a refusal can
        let it go). A 409 when the gateway or another key holds it."""
        where = location or self.what
        if self.foreign(given):
            raise Conflict(f"{self.what} {given!r} is in use by the gateway", location=where)
        if given in self._ids and self._ids[given] != owner:
            raise Conflict(f"{self.what} {given!r} is in use by another API key", location=where)
        new = given not in self._ids
        self.add(given, owner)
        return new

    def add(self, given: str, owner: str | None = None) -> None:
        self._ids.put(given, owner)

    def release(self, given: str) -> None:
        self._ids.pop(given)

    def __contains__(self, given: object) -> bool:
        return isinstance(given, str) and given in self._ids and not self.foreign(given)

    def __len__(self) -> int:
        return len(self._ids)

    def owner_of(self, given: str) -> str | None:
        return self._ids.get(given)


class SubmittedPrompts(Claims):
    """Ids of the prompts sent through the passthrough's POST /prompt, each with its key; the
    gateway's own prompts are `foreign`."""

    what = "prompt_id"

    def __init__(
        self, limit: int = SUBMITTED_MAX, *, foreign: Callable[[str], bool] = lambda _: False
    ) -> None:
        super().__init__(limit, foreign=foreign)

    def of(self, owner: str | None) -> OwnedPrompts:
        """The prompts one API key sent (without keys, owner None: every one)."""
        return OwnedPrompts(self, owner)

    def newest(self, owner: str | None) -> list[str]:
        """The key's prompt ids, newest first."""
        return [p for p in reversed(self._ids) if self._ids[p] == owner and p in self]


class ClientIds(Claims):
    """The clientIds of websockets and prompts; the gateway's own event streams' are `foreign`."""

    what = "clientId"

    def __init__(
        self, limit: int = CLIENT_IDS_MAX, *, foreign: Callable[[str], bool] = lambda _: False
    ) -> None:
        super().__init__(limit, foreign=foreign)


@dataclass(frozen=True)
class OwnedPrompts:
    """The passthrough prompts of one API key, as a container of prompt ids."""

    submitted: SubmittedPrompts
    owner: str | None

    def __contains__(self, prompt_id: object) -> bool:
        return (
            isinstance(prompt_id, str)
            and prompt_id in self.submitted
            and self.submitted.owner_of(prompt_id) == self.owner
        )
