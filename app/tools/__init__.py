"""Command-line tools beside the server: the client (`python -m app.cli`: jobs, and models
with `models pull|ls`) and the workflow module generator (`python -m app.scaffold`).

Imports: the layers below; nothing imports them.
"""
