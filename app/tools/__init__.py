"""Command-line tools beside the server: the client (`python -m app.cli`) and the workflow
module generator (`python -m app.scaffold`).

Imports: the layers below; nothing imports them.
"""
