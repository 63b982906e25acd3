"""The gateway: one process's services, wired together, started and stopped in order.

Layer: above app.core, app.comfy, app.jobs and app.registry, which it composes; below the
routes, the edge middlewares and the facades, which reach jobs and ComfyUI only through the
Gateway's door (app.gateway.door.JobDoor: every method takes the caller's key), its `comfy`
(app.gateway.comfy.ComfyAccess) and its `models` (the model store: downloads, the cache,
ComfyUI's model listing).
"""

from app.gateway.gateway import Gateway

__all__ = ["Gateway"]
