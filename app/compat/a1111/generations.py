"""A1111 generations on the shipped workflow modules: one job per image, progress, interrupts.

A request becomes the input of `<SDAPI_WORKFLOW_FAMILY>/txt2img`, `img2img` or `inpaint`,
validated by that module's own (narrowed) RequestSchema, built by its generate_workflow and run
by the gateway's JobRunner, like `POST /workflows/...`. Each image is its own job with seed
`seed + i`, as A1111 numbers them, so every seed in `info.all_seeds` reproduces its image.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import time
import uuid
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.compat.a1111 import terms
from app.compat.a1111.state import Generation, SdapiState
from app.core.errors import ComfyUnavailable, Interrupted, InvalidRequest
from app.core.keys import Caller
from app.core.outcome import ResultFile
from app.core.status import JobProgress
from app.gateway import Gateway
from app.media.caps import InputCaps
from app.registry.load import Registry, Workflow

# The module's field -> the A1111 field a client wrote, for the locations of 400s.
A1111_FIELD = {
    "cfg": "cfg_scale",
    "denoise": "denoising_strength",
    "image": "init_images",
    "checkpoint": "override_settings.sd_model_checkpoint",
}
MAX_IMAGES = 64  # batch_size * n_iter: one request must not queue unbounded work


class Txt2ImgRequest(BaseModel):
    """AUTOMATIC1111's txt2img request; fields not listed are accepted and ignored."""

    model_config = ConfigDict(
        extra="allow",
        allow_inf_nan=False,  # `"cfg_scale": "nan"` would reach the graph, which cannot carry it
        json_schema_extra={"examples": [{"prompt": "a cat <lora:detail:0.6>", "steps": 20}]},
    )

    prompt: str = Field("", description="What to draw; `<lora:name:weight>` tags apply LoRAs")
    negative_prompt: str = Field("", description="What to keep out of the image")
    width: int = Field(512, description="Width in pixels (rounded down to a multiple of 8)")
    height: int = Field(512, description="Height in pixels (rounded down to a multiple of 8)")
    steps: int = Field(20, description="Sampling steps")
    cfg_scale: float = Field(7.0, description="Classifier-free guidance scale")
    sampler_name: str | None = Field(
        None, description="A1111 sampler, e.g. `DPM++ 2M Karras`, or ComfyUI's own name"
    )
    sampler_index: str | None = Field(None, description="Old name of sampler_name")
    scheduler: str | None = Field(None, description="A1111 scheduler, e.g. `karras`")
    seed: int = Field(-1, description="Seed of the first image; -1 for a random one")
    batch_size: int = Field(1, ge=1, description="Images per batch")
    n_iter: int = Field(1, ge=1, description="Batches; image i gets seed `seed + i`")
    denoising_strength: float | None = Field(
        None, description="img2img: how much to change the image (0-1)"
    )
    override_settings: dict[str, Any] = Field(
        default_factory=dict, description="Only `sd_model_checkpoint` is honoured"
    )
    send_images: bool = Field(True, description="Return the images")


class Img2ImgRequest(Txt2ImgRequest):
    """AUTOMATIC1111's img2img request; with `mask`, inpainting (white is repainted)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"init_images": ["<base64>"]}]})

    init_images: list[str] = Field(min_length=1, description="Base64 images to start from")
    mask: str | None = Field(None, description="Base64 mask: white is repainted")
    denoising_strength: float | None = Field(0.75, description="How much to change (0-1)")
    resize_mode: int = Field(0, description="Only 0 (just resize to width x height)")
    inpainting_mask_invert: int = Field(0, description="1: repaint the black of the mask")
    include_init_images: bool = Field(False, description="Echo the inputs in `parameters`")


def workflow(registry: Registry, family: str, kind: str) -> Workflow:
    name = f"{family}/{kind}"
    found = next((w for w in registry.workflows if w.name == name), None)
    if found is None:
        raise InvalidRequest(
            f"SDAPI_WORKFLOW_FAMILY={family} needs the workflow module {name}, which is not in "
            "WORKFLOW_DIR"
        )
    if found.input_model is None or found.reasons is None:
        raise ComfyUnavailable("the gateway is starting; its workflows are not ready yet")
    return found


def default_checkpoint(flow: Workflow) -> str | None:
    assert flow.input_model is not None
    default = flow.input_model.model_fields["checkpoint"].default
    return default if isinstance(default, str) else None


def decode_image(data: str, where: str, caps: InputCaps) -> Image.Image:
    """A base64 image, held to the input caps before Pillow decodes it."""
    raw = data.split(",", 1)[1] if data.startswith("data:") else data
    caps.check_base64(raw, where)
    try:
        file = base64.b64decode(raw, validate=False)
    except (binascii.Error, ValueError) as e:
        raise InvalidRequest(f"{where} is not a base64-encoded image: {e}", location=where) from e
    caps.check(file, where)
    try:
        image = Image.open(io.BytesIO(file))
        image.load()
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError) as e:
        raise InvalidRequest(f"{where} is not a base64-encoded image: {e}", location=where) from e
    except Image.DecompressionBombError as e:  # MAX_INPUT_PIXELS set past Pillow's own limit
        raise InvalidRequest(f"{where}: {e}", location=where) from e
    return image


def encode_png(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


def fit(image: Image.Image, size: tuple[int, int], mode: str) -> Image.Image:
    """A1111's resize_mode 0, "just resize": the image stretched to the requested size."""
    image = image.convert(mode)
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def prepare_images(
    req: dict[str, Any], size: tuple[int, int], warnings: list[str], caps: InputCaps
) -> None:
    """Resize init_images and mask to the requested size (in place: base64 PNG strings).

    Runs in a worker thread: decoding and resizing large images would block the event loop.
    """
    if req.get("resize_mode", 0) not in (0, None):
        warnings.append(f"resize_mode {req['resize_mode']} is not supported: used 0 (just resize)")
    req["init_images"] = [
        encode_png(fit(decode_image(data, f"init_images.{i}", caps), size, "RGB"))
        for i, data in enumerate(req["init_images"])
    ]
    if req.get("mask"):
        mask = fit(decode_image(req["mask"], "mask", caps), size, "L")
        if req.get("inpainting_mask_invert"):
            mask = ImageOps.invert(mask)
        req["mask"] = encode_png(mask.convert("RGB"))


def module_input(flow: Workflow, values: dict[str, Any]) -> BaseModel:
    """Validate the values with the module's own schema; a 400 names the A1111 field."""
    assert flow.input_model is not None
    known = flow.input_model.model_fields
    values = {k: v for k, v in values.items() if k in known}  # e.g. img2img takes no width
    try:
        data = flow.input_model.model_validate(values)
    except ValidationError as e:
        problems = []
        for error in e.errors():
            first = str(error["loc"][0]) if error["loc"] else "body"
            problems.append((A1111_FIELD.get(first, first), error["msg"]))
        where = problems[0][0] if problems else "body"
        summary = "; ".join(f"{loc}: {msg}" for loc, msg in problems[:5])
        raise InvalidRequest(f"invalid request: {summary}", location=where) from None
    return data


async def run_images(
    gateway: Gateway, caller: Caller, state: SdapiState, flow: Workflow,
    inputs: list[dict[str, Any]], loras: list[tuple[str, terms.LoraTag]], warnings: list[str],
) -> list[ResultFile]:  # fmt: skip
    """Run one job per input, in order; an interrupt keeps the images made so far. The images
    are the jobs' files themselves (a large one on disk, in the spool): the answer streams
    their base64 (app.core.streamed_json), never building it whole."""
    generation = Generation(total=len(inputs), owner=caller.id)
    state.running.append(generation)
    images: list[ResultFile] = []
    try:
        for values in inputs:
            if generation.interrupted:
                break
            data = module_input(flow, values)
            graph = flow.graph(data)
            if loras and "loras" not in (flow.input_model.model_fields if flow.input_model else {}):
                graph = terms.add_loras(graph, loras)
            generation.job_id = f"sdapi-{uuid.uuid4().hex[:12]}"
            try:
                outcome = await gateway.door.run_job(
                    generation.job_id, graph, workflow=flow.name, caller=caller
                )
            except Interrupted:
                generation.interrupted = True
                break
            images.extend(outcome.files)
            generation.done += 1
    finally:
        state.running.remove(generation)
    if generation.interrupted:
        warnings.append(f"interrupted: {len(images)} of {len(inputs)} image(s) were made")
    return images


async def interrupt(gateway: Gateway, caller: Caller, states: list[SdapiState]) -> None:
    """Stop the caller's A1111 generations (an admin's: all): the running job is interrupted,
    later ones never start."""
    for generation in [g for state in states for g in state.running]:
        generation.interrupted = True
        job_id, owner = generation.job_id, generation.owner
        if job_id is not None and await gateway.door.running_job(job_id, caller, owner):
            await gateway.door.interrupt(job_id, caller, owner)


async def progress(gateway: Gateway, caller: Caller, states: list[SdapiState]) -> dict[str, Any]:
    """A1111's /progress: the oldest running generation's (of those the caller may see) share
    done and its time left."""
    running = sorted((g for state in states for g in state.running), key=lambda g: g.started)
    generation = running[0] if running else None
    value, step, steps, job_count = 0.0, 0, 0, gateway.door.running_jobs(caller)
    eta, image = 0.0, None
    if generation is not None:
        record = await gateway.door.running_job(generation.job_id or "", caller, generation.owner)
        if record is not None:
            progress = JobProgress.of(record.progress)
            step, steps = int(progress.step), int(progress.max)
            if (preview := record.preview) is not None:
                image = await asyncio.to_thread(png_base64, preview.image)
        within = step / steps if steps else 0.0
        value = min((generation.done + within) / generation.total, 1.0)
        elapsed = time.monotonic() - generation.started
        eta = elapsed / value - elapsed if value > 0 else 0.0
    return {
        "progress": round(value, 4),
        "eta_relative": round(eta, 2),
        "state": {
            "skipped": False,
            "interrupted": bool(generation and generation.interrupted),
            "job": generation.job_id or "" if generation else "",
            "job_count": job_count,
            "job_timestamp": "0",
            "job_no": generation.done if generation else 0,
            "sampling_step": step,
            "sampling_steps": steps,
        },
        "current_image": image,
        "textinfo": None,
    }


def png_base64(image: bytes) -> str | None:
    """A preview as A1111's current_image: base64 PNG (ComfyUI sends JPEG); None if unreadable."""
    buffer = io.BytesIO()
    try:
        with Image.open(io.BytesIO(image)) as picture:
            picture.save(buffer, format="PNG", compress_level=1)
    except (OSError, ValueError):
        return None
    return base64.b64encode(buffer.getvalue()).decode("ascii")
