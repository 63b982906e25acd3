"""Running one job end to end: inputs in, submission, outputs out, uploads and webhooks.

Imports: app.core, app.comfy, app.media and app.models (a job's model URLs are resolved by the
model store where the job runs).
"""
