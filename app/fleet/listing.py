"""What the operator page lists of the fleet: the jobs waiting, the last finished, the gateways.

Read from what the store keeps anyway (the stream, the finished jobs' sorted set, the consumer
group): each list is a few round trips, pipelined, and never reads a job's result.
"""

from __future__ import annotations

from typing import Any

from app.fleet.order import QUEUED
from app.fleet.records import RemoteRecord
from app.fleet.store import FleetStore
from app.fleet.stream import GROUP


async def finished(store: FleetStore, limit: int) -> list[RemoteRecord]:
    """The last finished jobs the fleet keeps (at most limit), newest first, without results."""
    keys = await store.redis.zrevrange(store.history[0], 0, max(limit - 1, 0))
    return await _records(store, [str(key) for key in keys])


async def consumers(store: FleetStore) -> list[dict[str, Any]]:
    """The gateways that ever read the queue: `name`, `pending` (jobs held), `idle` (ms). Not
    `~queued`, which holds the waiting jobs' messages and is no gateway (app.fleet.order)."""
    found: list[dict[str, Any]] = await store.redis.xinfo_consumers(store.stream, GROUP)
    return [consumer for consumer in found if consumer["name"] != QUEUED]


async def _records(store: FleetStore, keys: list[str]) -> list[RemoteRecord]:
    """The jobs' records from their hashes, in one round trip; the ones no longer kept left out."""
    keys = [key for key in keys if key]
    if not keys:
        return []
    async with store.redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.hgetall(store.job_key(key))
        states = await pipe.execute()
    return [
        RemoteRecord(store, key, state, 0) for key, state in zip(keys, states, strict=True) if state
    ]
