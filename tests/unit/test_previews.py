"""Latent previews: ComfyUI's binary frames decoded, routed to their prompt by the tracker, kept
newest-only and throttled per job, and followed without a backlog."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from app.comfy.command import CommandLine
from app.comfy.graph import node_names
from app.comfy.previews import PreviewFrame, decode
from app.compat.a1111.generations import png_base64
from app.compat.v2.events import v2_preview
from app.core.errors import GatewayError
from app.core.outcome import JobOutcome
from app.core.settings import Settings
from app.jobs.preview import PreviewThrottle
from app.jobs.records import JobEvent, JobRecord
from app.tools.cli import ProgressView, write_preview

aio = pytest.mark.asyncio(loop_scope="module")


async def eventually(condition: Callable[[], bool], timeout_s: float = 5) -> None:
    for _ in range(int(timeout_s / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise TimeoutError(f"still false after {timeout_s}s")


def jpeg(width: int = 8, height: int = 4, color: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="JPEG")
    return buffer.getvalue()


def plain_frame(image: bytes, image_type: int = 1) -> bytes:
    """PREVIEW_IMAGE, as ComfyUI's send_image writes it."""
    return struct.pack(">II", 1, image_type) + image


def metadata_frame(image: bytes, **meta: Any) -> bytes:
    """PREVIEW_IMAGE_WITH_METADATA, as ComfyUI's send_image_with_metadata writes it."""
    body = json.dumps({"image_type": "image/jpeg", **meta}).encode()
    return struct.pack(">II", 4, len(body)) + body + image


# -- the frame decoder ------------------------------------------------------------------------


def test_decodes_a_plain_preview_frame() -> None:
    image = jpeg()
    assert decode(plain_frame(image)) == PreviewFrame(image, "image/jpeg")
    assert decode(plain_frame(b"png-bytes", 2)) == PreviewFrame(b"png-bytes", "image/png")


def test_decodes_a_preview_frame_with_metadata() -> None:
    image = jpeg()
    frame = metadata_frame(image, prompt_id="p1", node_id="3", display_node_id="3")
    assert decode(frame) == PreviewFrame(image, "image/jpeg", "p1", "3")
    # a node inside a subgraph is shown as the node of the graph that was sent
    inner = metadata_frame(image, prompt_id="p1", node_id="7:2", display_node_id="7")
    assert decode(inner) == PreviewFrame(image, "image/jpeg", "p1", "7")


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x00\x00\x00\x01",  # truncated
        struct.pack(">II", 3, 0) + b"text",  # TEXT is not a preview
        struct.pack(">II", 1, 9) + b"img",  # unknown image type
        struct.pack(">II", 1, 1),  # no image
        struct.pack(">II", 4, 100) + b"{}",  # metadata longer than the frame
        struct.pack(">II", 4, 3) + b"{x}img",  # metadata not JSON
        struct.pack(">II", 4, 2) + b"[]img",  # metadata not an object
        metadata_frame(b"img", image_type="text/html"),
    ],
)
def test_junk_frames_are_not_previews(frame: bytes) -> None:
    assert decode(frame) is None


# -- the job's newest preview, throttled ------------------------------------------------------


def record(max_per_s: float = 1000.0) -> JobRecord:
    rec = JobRecord("job-1", "p1", preview_max_per_s=max_per_s)
    rec.node_names = {"3": "KSampler", "9": "My sampler"}
    rec.emit("queued", {"id": "job-1"})
    rec.on_comfy_event("execution_start", {})
    return rec


def frame(color: str) -> PreviewFrame:
    return PreviewFrame(jpeg(color=color), "image/jpeg")


@aio
async def test_throttle_publishes_at_once_then_the_newest_when_the_window_opens() -> None:
    published: list[int] = []
    newest = [0]
    throttle = PreviewThrottle(20.0, lambda: published.append(newest[0]))
    for n in range(1, 6):
        newest[0] = n
        throttle.offer()
    assert published == [1]  # the first at once; the rest wait for the window
    await eventually(lambda: len(published) == 2)
    assert published == [1, 5]  # the newest, once: none in between, the last not lost
    await asyncio.sleep(0.1)
    assert published == [1, 5]
    throttle.close()


@aio
async def test_the_record_keeps_the_newest_preview_with_its_node_name_and_step() -> None:
    rec = record()
    rec.on_comfy_event("progress", {"value": 3, "max": 10, "node": "3"})
    rec.on_preview(frame("red"), "3")
    rec.on_preview(frame("blue"), "3")
    assert rec.preview is not None
    assert rec.preview.image == jpeg(color="blue")
    assert (rec.preview.node, rec.preview.node_name) == ("3", "KSampler")
    assert (rec.preview.step, rec.preview.max, rec.preview.media_type) == (3, 10, "image/jpeg")
    data = rec.preview.event_data()
    assert data["image"] == "data:image/jpeg;base64," + base64.b64encode(rec.preview.image).decode()
    assert v2_preview(data) == {
        "node_id": "3",
        "content_type": "image/jpeg",
        "data_base64": data["image"].split(",", 1)[1],
    }


async def previews_of(rec: JobRecord, after: int = 0) -> list[JobEvent]:
    """Every event a follower from `after` gets, up to the end."""
    got = []
    async for ev in rec.follow(after):
        assert ev is not None
        got.append(ev)
    return got


@aio
async def test_a_late_follower_gets_only_the_newest_preview_then_none_after_the_end() -> None:
    rec = record(max_per_s=1.0)
    for color in ("red", "green", "blue"):
        rec.on_preview(frame(color), "3")
    await eventually(lambda: rec.previews_published == 2)  # red at once, blue when it opens
    following = asyncio.create_task(previews_of(rec, after=1))  # resumed after `queued`
    await asyncio.sleep(0)  # it reads what is there
    rec.on_preview(frame("white"), "9")  # due when the window opens, after the job ended
    rec.end(JobOutcome("job-1", {}))
    assert rec.preview is None  # nothing held once it ended
    got = await asyncio.wait_for(following, 5)
    kinds = [e.type for e in got]
    assert kinds == ["running", "preview", "complete"]  # the newest only, never a backlog
    shown = got[1].data
    assert shown["image"].endswith(base64.b64encode(jpeg(color="blue")).decode())
    assert got[1].id == 2  # resumes after the event before it
    await asyncio.sleep(1.1)
    assert rec.previews_published == 2  # the pending one died with the job


@aio
async def test_a_slow_follower_gets_the_newest_not_a_backlog() -> None:
    rec = record(max_per_s=1000.0)
    stream = rec.follow(2)
    rec.on_preview(frame("red"), "3")
    first = await anext(stream)
    assert first is not None and first.type == "preview"
    # while it does not read, previews come and go: it holds none of them
    for color in ("green", "blue", "white"):
        rec.on_preview(frame(color), "3")
        await asyncio.sleep(0.01)
    nxt = await anext(stream)
    assert nxt is not None and nxt.type == "preview"
    assert nxt.data["image"].endswith(base64.b64encode(jpeg(color="white")).decode())
    rec.end(JobOutcome.failed("job-1", {}, GatewayError("x")))
    last = await anext(stream)
    assert last is not None and last.type == "failed"
    await stream.aclose()


@aio
async def test_a_finished_job_takes_no_preview() -> None:
    rec = record()
    rec.end(JobOutcome("job-1", {}))
    rec.on_preview(frame("red"), "3")
    assert rec.preview is None and rec.previews_published == 0


# -- names, the command line, the facades' shapes ---------------------------------------------


def test_node_names_are_titles_else_class_types() -> None:
    graph = {
        "3": {"class_type": "KSampler", "inputs": {}},
        "4": {"class_type": "KSampler", "inputs": {}, "_meta": {"title": "Refiner"}},
        "5": {"class_type": "VAEDecode", "inputs": {}, "_meta": {"title": "  "}},
    }
    assert node_names(graph) == {"3": "KSampler", "4": "Refiner", "5": "VAEDecode"}


def test_preview_method_reaches_comfyuis_command_line() -> None:
    def method(argv: list[str]) -> str:
        return argv[argv.index("--preview-method") + 1]

    assert method(CommandLine(Settings(), 0).argv()) == "auto"
    assert method(CommandLine(Settings(preview_method="none"), 0).argv()) == "none"
    custom = Settings(cmd="comfy --port {port} --preview-method {preview_method}")
    assert method(CommandLine(custom, 0).argv()) == "auto"


def test_preview_method_takes_only_comfyuis_choices() -> None:
    with pytest.raises(ValueError, match="preview_method"):
        Settings(preview_method="blurry")


def test_a1111_current_image_is_a_png() -> None:
    encoded = png_base64(jpeg(8, 4))
    assert encoded is not None
    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        assert (image.format, image.size) == ("PNG", (8, 4))
    assert png_base64(b"not an image") is None


def test_cli_shows_node_names_and_writes_the_newest_preview(tmp_path: Path) -> None:
    out = io.StringIO()
    view = ProgressView(out)
    view.show("executing", {"node": "3", "node_name": "KSampler"})
    view.show("progress", {"value": 2, "max": 2, "node": "3", "node_name": "KSampler"})
    assert "executing KSampler" in out.getvalue()
    assert "step 2/2 KSampler" in out.getvalue()
    for color in ("red", "blue"):
        data = {"image": "data:image/jpeg;base64," + base64.b64encode(jpeg(color=color)).decode()}
        written = write_preview(data, tmp_path)
    assert written == tmp_path / "preview.jpg"
    assert written.read_bytes() == jpeg(color="blue")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preview.jpg"]
