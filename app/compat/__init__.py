"""Facades for clients that already exist, one package each: ComfyUI's own API under /comfy
(app.compat.comfy: the passthrough, its rules, the websocket), AUTOMATIC1111's /sdapi/v1
(app.compat.a1111), the Comfy API v2 (app.compat.v2) and the blocking /api/v1/prompts
(app.compat.v1).

Imports: the gateway's door, app.routes (respond, json_body) and the layers below.
"""
