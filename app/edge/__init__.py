"""The edge: ASGI middlewares every request passes (API keys, CORS, body limit, request
metrics) and how errors render over HTTP.

Imports: app.core (and the gateway below it); never the routes or the facades.
"""
