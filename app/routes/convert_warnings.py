"""The `convert_output` options a job's conversion does not honour, named in a response header.

comfyui-api takes sharp's option names; those Pillow has no equivalent for are accepted and
ignored, never an error, and the answer says which (`X-Convert-Output-Ignored`).
"""

from __future__ import annotations

from fastapi import Response

from app.core.convert_options import ignored_options
from app.core.options import JobOptions

HEADER = "X-Convert-Output-Ignored"


def name_ignored_options(response: Response, options: JobOptions) -> Response:
    if ignored := ignored_options(options.convert_output):
        response.headers[HEADER] = ", ".join(ignored)
    return response
