"""The core: what every layer shares and that depends on nothing else of app.

Settings, the error tree, request and response models (with the job options), job records,
logging, metrics and their hooks, the API-key rules (names, ids, the Caller) and per-key
limits, and the address policy for URLs a request names. Imports: nothing of app outside
app.core (enforced by `make check`).
"""
