"""Input values: sniffing by bytes and base64 decoding (addresses: test_addresses.py)."""

from __future__ import annotations

import base64

import pytest

from app.core.errors import InputError
from app.jobs.inputs import decode_base64, sniff

PNG = b"\x89PNG\r\n\x1a\n" + bytes(40)


@pytest.mark.parametrize(
    ("head", "kind", "extension"),
    [
        (PNG, "image", "png"),
        (b"\xff\xd8\xff\xe0" + bytes(40), "image", "jpg"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 " + bytes(40), "image", "webp"),
        (b"GIF89a" + bytes(40), "image", "gif"),
        (b"\x00\x00\x00\x1cftypisom" + bytes(40), "video", "mp4"),
        (b"\x1a\x45\xdf\xa3" + bytes(20) + b"webm" + bytes(20), "video", "webm"),
        (b"RIFF\x10\x00\x00\x00WAVEfmt " + bytes(40), "audio", "wav"),
        (b"ID3\x04" + bytes(40), "audio", "mp3"),
        (b"fLaC" + bytes(40), "audio", "flac"),
        (b"\x00\x00\x00\x20ftypM4A " + bytes(40), "audio", "m4a"),
    ],
)
def test_sniffed_from_bytes(head: bytes, kind: str, extension: str) -> None:
    found = sniff(head)
    assert found is not None
    assert (found.kind, found.extension) == (kind, extension)


def test_unknown_bytes_are_not_sniffed() -> None:
    assert sniff(b"hello world, not an image") is None


@pytest.mark.parametrize(
    "value",
    [
        base64.b64encode(PNG).decode(),
        "data:image/png;base64," + base64.b64encode(PNG).decode(),
        "data:image/jpeg;base64," + base64.b64encode(PNG).decode(),  # the prefix is not trusted
        base64.b64encode(PNG).decode().rstrip("="),
        "\n".join(base64.b64encode(PNG).decode()[i : i + 20] for i in range(0, 64, 20)),
    ],
)
def test_base64_decodes_with_or_without_prefix(value: str) -> None:
    assert decode_base64(value, "prompt.1.inputs.image") == PNG


def test_bad_base64_names_the_input() -> None:
    with pytest.raises(InputError) as caught:
        decode_base64("not base64 at all!!", "prompt.7.inputs.image")
    assert caught.value.location == "prompt.7.inputs.image"
    assert caught.value.status == 400
