"""A job's destinations (its webhooks and upload URL) checked against the address policy before
the job exists, on every path that accepts one (a lone gateway's start, a fleet's accept)."""

from __future__ import annotations

from app.core.addresses import AddressPolicy, AddressRefused
from app.core.errors import InvalidRequest
from app.core.options import JobOptions


async def check_destinations(options: JobOptions, addresses: AddressPolicy) -> None:
    """Refuse a webhook or upload URL the address policy refuses: a located 400, before the job
    exists, so nothing runs and nothing is ever sent there."""
    for location, url in options.destinations():
        try:
            await addresses.check(url)
        except AddressRefused as e:
            raise InvalidRequest(f"{location}: {e}", location=location) from None
