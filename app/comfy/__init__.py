"""One ComfyUI: its process, its HTTP API, its event stream, its catalog, its graphs, and which
of its nodes' inputs name model files.

Knows nothing of jobs, workflows, routes or the gateway. Imports: app.core only.
"""
