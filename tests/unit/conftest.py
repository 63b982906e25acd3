"""What every unit test shares: an environment without the gateway's settings in it."""

from __future__ import annotations

import pytest

from app.core.settings import Settings
from app.core.settings.theirs import THEIR_NAMES

# Every variable a Settings reads (comfyui-api's names too), and CONFIG_FILE, which names a file
# of more.
VARIABLES = [*(name.upper() for name in Settings.model_fields), *THEIR_NAMES, "CONFIG_FILE"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built in a test see only what the test sets, never the machine's."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
