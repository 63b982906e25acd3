"""The result cache: answers served again without running ComfyUI."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CacheSettings(BaseModel):
    """Result cache: a request answered before is answered again without running ComfyUI."""

    result_cache_max_mb: float = Field(
        0.0,
        ge=0,
        description="Size of the content-addressed result cache, counted in its files' bytes "
        "(0: off): it keeps the job's own files, those over 1 MiB on disk in the spool "
        "(OUTPUT_SPOOL_DIR) and the rest in memory. On, `/api/v1/prompts` serves a request "
        "whose canonical body was answered before from it, and so does `POST /prompt` with "
        '`"cache": true`; never for a graph with a random seed, nor, unless the request asks, '
        "one that reads URLs or input files",
    )

    @property
    def result_cache_max_bytes(self) -> int:
        return int(self.result_cache_max_mb * 2**20)
