"""CORS: which browser origins may call the gateway directly (CORS_ALLOW_ORIGINS)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

# What a browser app sends: a key, a JSON body, SSE's resume header.
ALLOW_HEADERS = ["Authorization", "X-API-Key", "Content-Type", "Accept", "Last-Event-ID"]
# What it may read from an answer besides the safelisted ones: when to retry, why a 401.
EXPOSE_HEADERS = ["Retry-After", "WWW-Authenticate"]
PREFLIGHT_MAX_AGE_S = 600


def add_cors(app: FastAPI, origins: tuple[str, ...]) -> None:
    """Answer preflights and tag answers for these origins; add nothing when there are none.

    Add it last, so it is the outermost middleware: a preflight carries no API key and must
    be answered before the key check, and a 401 must still carry the CORS headers so that the
    browser app can read it. With `*`, credentialed requests (cookies) are not allowed.
    """
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_credentials="*" not in origins,
        allow_methods=["GET", "POST"],
        allow_headers=ALLOW_HEADERS,
        expose_headers=EXPOSE_HEADERS,
        max_age=PREFLIGHT_MAX_AGE_S,
    )
