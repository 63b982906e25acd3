"""A model-free graph whose output is a large incompressible file: LoadLatent -> SaveLatent.

ComfyUI writes a 256 MiB PNG only after decoding and re-encoding it in several GB of its own
memory, and slowly on 2 cores. A latent costs it little: LoadLatent reads a safetensors file
of random float32 from the input folder and SaveLatent writes it back out, uncompressed, as
`<prefix>_00001_.latent`: the output is the tensor's bytes plus a header of a few hundred
bytes. The noise files are made once and kept in a cache folder (git-ignored), so reruns are
fast; the gateway's input folder gets a hard link to each.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

MIB = 2**20

# Clearing this bit of a float32's top byte keeps its exponent below 128: |x| < 2, and no NaN
# or infinity that a multiplication in LoadLatent could rewrite.
_SMALL_EXPONENT = bytes(b & ~0x40 for b in range(256))


def latent_side(mib: int) -> int:
    """The side of a square 4-channel float32 latent of `mib` MiB (16 bytes a position)."""
    side = int((mib * MIB // 16) ** 0.5)
    if side * side * 16 != mib * MIB:
        raise ValueError(f"{mib} MiB is not a square latent; use 4**k MiB (16, 64, 256)")
    return side


def noise_latent(cache: Path, mib: int) -> Path:
    """A cached `noise-<mib>.latent` in `cache`, written the first time: random float32 of
    shape [1, 4, side, side], as safetensors with SaveLatent's format marker."""
    path = cache / f"noise-{mib}.latent"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    side = latent_side(mib)
    size = mib * MIB
    header: dict[str, Any] = {
        "latent_tensor": {"dtype": "F32", "shape": [1, 4, side, side], "data_offsets": [0, size]},
        # Present, LoadLatent takes the values as they are (absent, it rescales them).
        "latent_format_version_0": {"dtype": "F32", "shape": [0], "data_offsets": [size, size]},
    }
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    partial = path.with_suffix(".partial")
    with partial.open("wb") as out:
        out.write(struct.pack("<Q", len(text)) + text)
        for _ in range(mib):
            piece = bytearray(os.urandom(MIB))
            piece[3::4] = piece[3::4].translate(_SMALL_EXPONENT)  # little-endian: byte 3 is top
            out.write(piece)
    partial.rename(path)
    return path


def link_input(input_dir: Path, source: Path) -> str:
    """Put `source` into a gateway's input folder, a hard link (a copy on another filesystem);
    the name LoadLatent is given. Not a symbolic link: ComfyUI 0.33 refuses a file whose real
    path is outside its input folder."""
    target = input_dir / source.name
    if not target.exists():
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
    return source.name


def latent_graph(input_name: str, prefix: str) -> dict[str, Any]:
    """LoadLatent -> SaveLatent. A new `prefix` makes SaveLatent run again (LoadLatent's
    result is cached by ComfyUI while the file stays the same)."""
    return {
        "1": {"class_type": "LoadLatent", "inputs": {"latent": input_name}},
        "2": {
            "class_type": "SaveLatent",
            "inputs": {"samples": ["1", 0], "filename_prefix": prefix},
        },
    }
