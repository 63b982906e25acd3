"""Uploaded v2 assets: records by id and by content hash, and the placement rules of `file_path`.

An asset is a file the client uploaded into ComfyUI's input folder; its id is a UUID, its hash
`blake3:<hex>` of its bytes, and identical bytes are one asset (of one API key: each key has
assets of its own, and a hash never tells a key what another uploaded). The records live in this
process (at most MAX_ASSETS, the oldest forgotten first); the bytes live in ComfyUI's input
folder and stay there when a record is deleted, as with comfy-api-proxy.
"""

from __future__ import annotations

import posixpath
import uuid
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import blake3

from app.compat.v2.envelope import RETENTION, iso, now
from app.core.bounded import BoundedMap
from app.core.keys import Caller

MAX_ASSETS = 10_000
INPUT_ROOTS = frozenset({"input"})
# ComfyUI's model folders (folder_paths), which the proxy places model files into.
MODEL_ROOTS = frozenset(
    {
        "checkpoints", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision",
        "style_models", "embeddings", "diffusers", "vae_approx", "controlnet", "gligen",
        "upscale_models", "latent_upscale_models", "hypernetworks", "photomaker", "classifiers",
        "model_patches", "audio_encoders", "background_removal", "frame_interpolation",
        "geometry_estimation", "optical_flow",
    }
)  # fmt: skip


class PlacementError(ValueError):
    """A `file_path` that names no acceptable place."""


def placement(file_path: str) -> tuple[bool, str]:
    """(is a model file, the path below its root) for an upload's `file_path`, as the proxy
    reads it: `photo.png` and `input/sub/photo.png` are inputs, `checkpoints/x.safetensors`
    (or `models/checkpoints/…`) a model file."""
    if not file_path or file_path.startswith(("/", "\\")):
        raise PlacementError(f"file_path must be relative: {file_path!r}")
    stripped = file_path.removeprefix("models/")
    parts = PurePosixPath(stripped).parts
    if not parts:
        raise PlacementError(f"file_path must include a filename: {file_path!r}")
    if ".." in parts:
        raise PlacementError(f"file_path must not contain '..': {file_path!r}")
    if len(parts) < 2:
        return False, stripped
    root = parts[0]
    if root not in MODEL_ROOTS | INPUT_ROOTS:
        allowed = sorted(MODEL_ROOTS | INPUT_ROOTS)
        raise PlacementError(f"'{root}' is not an allowlisted placement root (allowed: {allowed})")
    if root in MODEL_ROOTS:
        return True, stripped
    return False, posixpath.join(*parts[1:])


def content_hash(data: bytes) -> str:
    return "blake3:" + blake3.blake3(data).hexdigest()


@dataclass(frozen=True)
class Asset:
    """One uploaded file: the v2 record, and where ComfyUI keeps it."""

    id: str
    hash: str
    size_bytes: int
    content_type: str
    file_path: str
    created_at: str
    filename: str  # in ComfyUI's input folder, as its upload endpoint answered
    subfolder: str
    owner: str | None = None  # the id of the API key that uploaded it

    @property
    def comfy_name(self) -> str:
        """What a loader input names it by."""
        return f"{self.subfolder}/{self.filename}" if self.subfolder else self.filename

    def body(self, base: str, *, created_new: bool | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "hash": self.hash,
            "size_bytes": self.size_bytes,
            "content_type": self.content_type,
            "file_path": self.file_path,
            "created_at": self.created_at,
            "url": f"{base}/api/v2/assets/{self.id}/content",
            "url_expires_at": iso(now() + RETENTION),
        }
        if created_new is not None:
            body["created_new"] = created_new
        return body


class AssetStore:
    """Asset records by id and by (owner, hash); the first asset of some bytes keeps their
    hash. A caller finds only what it may see: its own assets (an admin key: by id, any)."""

    def __init__(self, max_assets: int = MAX_ASSETS) -> None:
        self.max_assets = max_assets
        self._by_id: BoundedMap[str, Asset] = BoundedMap(max_assets, on_evict=self._unhash)
        self._by_hash: dict[tuple[str | None, str], str] = {}

    def add(self, **fields: Any) -> Asset:
        asset = Asset(id=str(uuid.uuid4()), created_at=iso(now()), **fields)
        self._by_hash.setdefault((asset.owner, asset.hash), asset.id)
        self._by_id.put(asset.id, asset)
        return asset

    def get(self, asset_id: str, caller: Caller) -> Asset | None:
        asset = self._by_id.get(asset_id)
        return asset if asset is not None and caller.sees(asset.owner) else None

    def by_hash(self, hash_: str, caller: Caller) -> Asset | None:
        asset_id = self._by_hash.get((caller.id, hash_))
        return self._by_id.get(asset_id) if asset_id else None

    def delete(self, asset_id: str, caller: Caller) -> bool:
        return self.get(asset_id, caller) is not None and self._forget(asset_id)

    def _forget(self, asset_id: str) -> bool:
        asset = self._by_id.pop(asset_id)
        if asset is None:
            return False
        self._unhash(asset_id, asset)
        return True

    def _unhash(self, asset_id: str, asset: Asset) -> None:
        if self._by_hash.get((asset.owner, asset.hash)) == asset_id:
            del self._by_hash[(asset.owner, asset.hash)]
