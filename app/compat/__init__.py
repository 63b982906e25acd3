"""Facades for clients that already exist: AUTOMATIC1111's /sdapi/v1 and ComfyUI's own API
under /comfy (the passthrough and its rules).

Imports: the gateway's door and app.routes.respond, and the layers below.
"""
