"""The model store: models named by URL, downloaded into ComfyUI's model folders before a job
needs them, and the cache they go to.

store (the ModelStore: what routes and jobs ask), downloads (one download as its requesters
see it), land (a download's way into place), fetch, transfer and s3 (the bytes: HTTP(S) with
resume, or S3), cache (the index, the LRU eviction, what jobs hold), credentials (which header
goes to which host), refs (a graph's model URLs), grants (what a key may download), manifest
(MODELS_MANIFEST at start-up) and watch (ComfyUI's model listing).

Imports: app.core and app.comfy. Its one need from above, telling system events, is a callback
the gateway hands in (ModelStore's `on_event`).
"""
