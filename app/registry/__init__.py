"""Workflow modules: finding them, their typed fields, their schemas against this ComfyUI, and
whether their graphs can run here.

Imports: app.core and app.comfy. Workflow modules themselves import only app.workflow_types and
pydantic (scripts/check_workflow_imports.py, in `make check`).
"""
