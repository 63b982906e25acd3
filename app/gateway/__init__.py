"""The gateway: one process's services, wired together, started and stopped in order.

Layer: above app.core, app.comfy, app.jobs, app.registry and app.fleet, which it composes; below
the routes, the edge middlewares and the facades, which reach jobs and ComfyUI only through the
Gateway's door (`gateway.door`, app.gateway.door.JobDoor: every method takes the caller's key),
its `comfy` (app.gateway.comfy.ComfyAccess) and its `models` (the model store: downloads, the
cache, ComfyUI's model listing).

Modules: gateway (the composition root), backend (JobBackend: where jobs live, one
implementation per job mode: local_backend, fleet_backend), door, lifecycle (start and shutdown
in order), readiness (whether it takes work, /ready), quotas (KEY_LIMITS max_jobs), pool (the
ComfyUI instances), comfy (ComfyUI as routes see it).
"""

from app.gateway.gateway import Gateway

__all__ = ["Gateway"]
