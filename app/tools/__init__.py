"""Command-line tools beside the server: `comfy-gateway-cli` (app.tools.cli): jobs (`run`), models
(`models pull|ls`: model_commands) and the workflow module generator (`scaffold`).

Imports: the layers below; nothing imports them.
"""
