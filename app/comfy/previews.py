"""ComfyUI's binary websocket frames: latent previews, and which prompt and node each is of.

A frame is a big-endian u32 event type, then its payload (`server.py` `encode_bytes`;
`protocol.BinaryEventTypes`):
- 1 PREVIEW_IMAGE: a u32 image type (1 JPEG, 2 PNG), then the image (`send_image`). It names
  no prompt: it is of the prompt and node executing on that instance, as ComfyUI's own
  frontend reads it.
- 4 PREVIEW_IMAGE_WITH_METADATA: a u32 length, that much JSON (`prompt_id`, `node_id`,
  `display_node_id`, `image_type`: a media type), then the image (`send_image_with_metadata`).
  ComfyUI 0.3.75 and 0.33 send it instead of 1 to a socket whose first message announced the
  `supports_preview_metadata` feature flag (FEATURE_FLAGS), which the tracker does.
Anything else (3 TEXT, a truncated frame, an unknown image type) is not a preview.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
IMAGE_TYPES = {1: "image/jpeg", 2: "image/png"}
MEDIA_TYPES = frozenset(IMAGE_TYPES.values())
# The tracker's first message: ask for previews that name their prompt and node.
FEATURE_FLAGS = json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})


@dataclass(frozen=True)
class PreviewFrame:
    """One preview image as ComfyUI sent it; prompt_id and node are None when it named none."""

    image: bytes
    media_type: str  # image/jpeg or image/png
    prompt_id: str | None = None
    node: str | None = None


def decode(frame: bytes) -> PreviewFrame | None:
    """The preview in a binary frame, or None when the frame is not one."""
    if len(frame) < 8:
        return None
    kind, word = struct.unpack(">II", frame[:8])
    if kind == PREVIEW_IMAGE:
        media_type = IMAGE_TYPES.get(word)
        image = frame[8:]
        return PreviewFrame(image, media_type) if media_type and image else None
    if kind != PREVIEW_IMAGE_WITH_METADATA or len(frame) < 8 + word:
        return None
    try:
        meta: Any = json.loads(frame[8 : 8 + word])
    except ValueError:
        return None
    image = frame[8 + word :]
    if not isinstance(meta, dict) or meta.get("image_type") not in MEDIA_TYPES or not image:
        return None
    # A node inside a subgraph or group node is shown as the node of the graph that was sent.
    node = meta.get("display_node_id") or meta.get("node_id")
    prompt_id = meta.get("prompt_id")
    return PreviewFrame(
        image,
        meta["image_type"],
        str(prompt_id) if prompt_id is not None else None,
        str(node) if node is not None else None,
    )
