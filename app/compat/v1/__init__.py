"""ComfyUI's blocking API under /api/v1, as the OpenAPI document of hiddenswitch's ComfyUI fork
describes it: `POST /api/v1/prompts` runs a graph and answers when it has ended, with the file
itself or with URLs to it; `GET /api/v1/images/{digest}` serves that result again by the digest
of the request; `GET /api/v1/prompts` gives the last prompt ComfyUI ran.

Every request is a gateway job (API keys, metrics, MAX_QUEUE_DEPTH, PROMPT_TIMEOUT_S) and is
answered from the result cache when RESULT_CACHE_MAX_MB is set and the graph may be cached.
"""
