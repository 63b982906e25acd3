"""Running one job end to end: inputs in, submission, outputs out, uploads and webhooks; and
the models jobs need: the model store (downloads, their cache on disk, what jobs hold).

Imports: app.core and app.comfy.
"""
