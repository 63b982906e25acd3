"""A gateway's part in a fleet: many gateways sharing one job queue in Redis Streams
(QUEUE_URL). Any gateway accepts a job and answers for it; whichever has a free ComfyUI runs it;
a job outlives the gateway that took it.

Imports: app.core, app.comfy and app.jobs.
"""
