"""Running one job end to end: inputs in, submission, outputs out, uploads and webhooks.

Imports: app.core and app.comfy.
"""
