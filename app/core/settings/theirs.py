"""comfyui-api's settings by their own names: each mapped onto ours, or named at start-up as not
supported here, and why; none is silently ignored.

`their_settings(environ)` gives the values ours take from theirs (load_settings applies them; a
value of ours set to something else is a start-up error naming both) and the lines start-up
logs about the rest. LOG_LEVEL's `warn`, `trace` and `fatal` are read by LOG_LEVEL itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.core.settings.sources import SettingsError

# Theirs that are ours under another name: (their name, ours), their values as ours read them.
RENAMED = (("CACHE_DIR", "MODEL_CACHE_DIR"), ("MANIFEST", "MODELS_MANIFEST"))
# Theirs that have no effect here, and why (logged as a warning at start-up).
NO_EFFECT = {
    "PREPEND_FILENAMES": "output files are named `<filename_prefix>_<tag>_…` here, never with the "
    "request id in front (or in place of the prefix): read the names from the answer",
    "MARKDOWN_SCHEMA_DESCRIPTIONS": "/docs shows each workflow field's description from its "
    "module here; there is no markdown table to turn off",
    "BASE": "samplers and schedulers are read from ComfyUI's /object_info here, not from its "
    "Python environment, so no image's environment needs sourcing",
}
SALAD_PREFIX = "SALAD_"
# Every name of theirs read here (besides SALAD_*), for tests that need an environment without.
THEIR_NAMES = (
    *(their for their, _ in RENAMED), *NO_EFFECT, "LRU_CACHE_SIZE_GB",
)  # fmt: skip
HEADER_NAME, HEADER_VALUE = "HTTP_AUTH_HEADER_NAME", "HTTP_AUTH_HEADER_VALUE"
HEADER_PREFIXES = "HTTP_AUTH_HEADER_PREFIXES"  # ours: where their header may go


@dataclass
class Theirs:
    """What their settings become here."""

    values: dict[str, Any] = field(default_factory=dict)  # ours (lower case) -> value
    notes: list[str] = field(default_factory=list)  # what start-up logs as warnings


def _set(theirs: Theirs, env: Mapping[str, str], their: str, ours: str, value: Any) -> None:
    """Ours takes their value; both set to different values stops start-up."""
    given = env.get(ours, "").strip()
    if given and given != str(value).strip():
        raise SettingsError(
            f"invalid settings: {their} (comfyui-api's name) and {ours} (ours) are both set, to "
            f"different values: set one of them"
        )
    theirs.values[ours.lower()] = value


def their_settings(environ: Mapping[str, str]) -> Theirs:
    """Their variables in environ, as ours; SettingsError for a conflict or one that cannot
    work here."""
    env = {k.upper(): v for k, v in environ.items()}
    theirs = Theirs()
    for their, ours in RENAMED:
        if env.get(their, "").strip():
            _set(theirs, env, their, ours, env[their].strip())
    lru = env.get("LRU_CACHE_SIZE_GB", "").strip()
    if lru:
        try:
            gb = float(lru)
        except ValueError:
            raise SettingsError(
                f"invalid setting LRU_CACHE_SIZE_GB={lru!r}: not a number"
            ) from None
        if gb > 0:  # theirs: 0 is off, as our MODEL_CACHE_MAX_GB unset
            _set(theirs, env, "LRU_CACHE_SIZE_GB", "MODEL_CACHE_MAX_GB", lru)
    if env.get("MANIFEST_JSON", "").strip() and env.get("MANIFEST", "").strip():
        theirs.values.pop("models_manifest", None)  # theirs: MANIFEST_JSON wins
        theirs.notes.append("MANIFEST_JSON is set: MANIFEST is not read (as comfyui-api does)")
    _auth_header(theirs, env)
    for name, why in NO_EFFECT.items():
        if env.get(name, "").strip():
            theirs.notes.append(f"{name} has no effect here: {why}")
    salad = sorted(k for k in env if k.startswith(SALAD_PREFIX) and env[k].strip())
    if salad:
        theirs.notes.append(
            f"{', '.join(salad)}: sent as `salad_*` metadata with system events; the deletion "
            "cost is not sent to SaladCloud's instance metadata service here"
        )
    return theirs


def _auth_header(theirs: Theirs, env: Mapping[str, str]) -> None:
    """Their header for every HTTP request goes here only to the prefixes the operator lists
    (HTTP_AUTH_HEADER_PREFIXES, checked by ModelSettings): model downloads (app.models.
    credentials) and, unless HTTP_UPLOAD_AUTH_HEADER is set, http_upload PUTs."""
    name, value = env.get(HEADER_NAME, "").strip(), env.get(HEADER_VALUE, "").strip()
    prefixes = env.get(HEADER_PREFIXES, "").strip()
    if name and value and prefixes and not env.get("HTTP_UPLOAD_AUTH_HEADER", "").strip():
        theirs.values["http_upload_auth_header"] = f"{name}: {value}"
        _set(theirs, env, HEADER_PREFIXES, "HTTP_UPLOAD_AUTH_PREFIXES", prefixes)
