"""What /api/v1 remembers of the requests it answered, and the files answered for a digest.

Both are FastAPI dependencies of the v1 handlers (V1StateDep, AnswersDep).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from app.comfy.graph import Graph
from app.core.bounded import BoundedMap
from app.core.errors import InvalidRequest, NotFound
from app.core.keys import Caller
from app.core.outcome import ResultFile
from app.gateway import Gateway
from app.jobs.result_cache import ResultCache
from app.routes.deps import CallerDep, GatewayDep, ResultCacheDep
from app.routes.respond import cache_key

DIGEST = re.compile(r"^[0-9a-f]{64}$")
KEEP_DIGESTS = 1000  # digest -> the job that answered it, for GET /api/v1/images
KEEP_GRAPHS = 100  # prompt id -> the graph as its request sent it, for GET /api/v1/prompts


class V1State:
    """What /api/v1 remembers of the requests it answered (this process only), on app.state.

    Digests are kept per API key (as the result cache keys them: app.routes.respond.cache_key):
    a key serves only results of its own requests.
    """

    def __init__(self) -> None:
        self.answered: BoundedMap[str, str] = BoundedMap(KEEP_DIGESTS)
        self.graphs: BoundedMap[str, Graph] = BoundedMap(KEEP_GRAPHS)
        self.last: dict[str | None, Graph] = {}  # each key's last graph (a key: one entry)

    def remember(
        self, key: str, request_id: str, prompt_id: str, graph: Graph, owner: str | None
    ) -> None:
        self.answered.put(key, request_id)
        self.graphs.put(prompt_id, graph)
        self.last[owner] = graph


async def v1_state(connection: HTTPConnection) -> V1State:
    state: V1State = connection.app.state.prompts_v1
    return state


V1StateDep = Annotated[V1State, Depends(v1_state)]


@dataclass
class Answers:
    """The files answered for a digest, as one caller may have them again."""

    gateway: Gateway
    state: V1State
    caller: Caller
    results: ResultCache | None

    async def files(self, key: str) -> tuple[ResultFile, ...]:
        """The files answered for a digest: from the cache, else from a job this process
        kept."""
        key = key.lower()
        if not DIGEST.match(key):
            raise InvalidRequest(
                "the digest is the 64 hex digits of SHA-256 (the Digest header after `SHA256=`)",
                location="digest",
            )
        caller, gateway = self.caller, self.gateway
        hit = self.results.peek(cache_key(key, caller)) if self.results is not None else None
        if hit is not None:
            return hit.files
        request_id = self.state.answered.get(cache_key(key, caller))
        record = await gateway.door.running_job(request_id, caller) if request_id else None
        if request_id is None or record is not None:
            raise NotFound(f"no result for {key} here (unknown, still running, or expired)")
        try:
            outcome = (await gateway.door.job(request_id, caller)).outcome
        except NotFound:
            outcome = None
        if outcome is None or outcome.error is not None:
            raise NotFound(f"no result for {key} here (failed, or no longer kept)")
        return outcome.files


async def answers(
    gateway: GatewayDep, state: V1StateDep, caller: CallerDep, results: ResultCacheDep
) -> Answers:
    return Answers(gateway, state, caller, results)


AnswersDep = Annotated[Answers, Depends(answers)]
