"""AUTOMATIC1111's API under /sdapi/v1, so A1111 clients work against the gateway unchanged.

txt2img and img2img run the shipped workflow modules of SDAPI_WORKFLOW_FAMILY (see
app.compat.a1111.generations); the listings come from the running ComfyUI; `/options` holds the
checkpoint that generations use unless they override it. Fields that cannot be honoured are
named in the `warnings` of `info`; invalid ones are a 400 naming the field.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import PurePosixPath
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel

from app.compat.a1111 import generations, terms
from app.compat.a1111.generations import Img2ImgRequest, Txt2ImgRequest
from app.compat.a1111.state import Sdapi, SdapiDep, SdapiState, SdapiStatesDep
from app.core.errors import InvalidRequest
from app.media.caps import InputCaps
from app.routes.deps import CallerDep, GatewayDep, InputCapsDep
from app.routes.json_body import StrictJsonRoute
from app.routes.respond import ERRORS, streamed_json

router = APIRouter(prefix="/sdapi/v1", tags=["automatic1111"], route_class=StrictJsonRoute)


async def generate(sdapi: Sdapi, caps: InputCaps, req: Txt2ImgRequest, kind: str) -> dict[str, Any]:
    """Run an A1111 request on the family's workflow: one job per image; A1111's answer, each
    of `images` the job's ResultFile (streamed as its base64 by the route)."""
    gateway, registry, state, family = sdapi.gateway, sdapi.registry, sdapi.state, sdapi.family
    fields = req.model_dump()
    warnings = terms.unsupported(fields)
    warnings += [
        f"override_settings.{key} is not supported and was ignored"
        for key in req.override_settings
        if key != "sd_model_checkpoint"
    ]
    name = kind
    if isinstance(req, Img2ImgRequest) and req.mask:
        name = "inpaint" if family == "sd15" else "img2img"
        if family != "sd15":
            warnings.append(f"mask is ignored: the {family} workflows have no inpainting")
    flow = generations.workflow(registry, family, name)
    assert flow.input_model is not None
    model = flow.input_model
    width = terms.image_size(req.width, "width", warnings)
    height = terms.image_size(req.height, "height", warnings)
    try:
        prompt, tags = terms.split_loras(req.prompt)
    except ValueError as e:
        raise InvalidRequest(str(e), location="prompt") from None
    negative, unused = terms.split_loras(req.negative_prompt)
    if unused:
        warnings.append("LoRAs in negative_prompt are not supported and were ignored")
    loras = []
    if tags:
        files = await gateway.comfy.model_files("loras")
        for tag in tags:
            file = terms.find_file(tag.name, files)
            if file is None:
                warnings.append(f"LoRA {tag.name!r} is not installed and was ignored")
            else:
                loras.append((file, tag))
    checkpoint = checkpoint_for(model, req.override_settings.get("sd_model_checkpoint"), state)
    sampler, scheduler = terms.sampler_and_scheduler(
        req.sampler_name or req.sampler_index,
        req.scheduler,
        terms.allowed(model, "sampler_name"),
        terms.allowed(model, "scheduler"),
        warnings,
    )
    count = req.batch_size * req.n_iter
    if count > generations.MAX_IMAGES:
        raise InvalidRequest(
            f"batch_size x n_iter is {count}; at most {generations.MAX_IMAGES} images per request",
            location="batch_size",
        )
    seed = terms.seed_of(req.seed)
    base: dict[str, Any] = {
        "prompt": prompt or " ",  # the modules need text; a space encodes as an empty prompt
        "negative_prompt": negative,
        "width": width,
        "height": height,
        "steps": req.steps,
        "cfg": req.cfg_scale,
        "sampler_name": sampler,
        "scheduler": scheduler,
        "batch_size": 1,
    }
    if checkpoint is not None:
        base["checkpoint"] = checkpoint
    if "loras" in model.model_fields:
        base["loras"] = [
            {"name": f, "strength_model": t.unet, "strength_clip": t.te} for f, t in loras
        ]
    inputs = [base | {"seed": seed + i} for i in range(count)]
    if isinstance(req, Img2ImgRequest):
        await asyncio.to_thread(generations.prepare_images, fields, (width, height), warnings, caps)
        for i, values in enumerate(inputs):
            values["denoise"] = req.denoising_strength
            values["image"] = fields["init_images"][i % len(fields["init_images"])]
            if fields.get("mask"):
                values["mask"] = fields["mask"]
    images = await generations.run_images(
        gateway, sdapi.caller, state, flow, inputs, loras, warnings
    )
    info = {
        "prompt": req.prompt,
        "negative_prompt": req.negative_prompt,
        "seed": seed,
        "all_seeds": [seed + i for i in range(len(images))],
        "width": width,
        "height": height,
        "sampler_name": req.sampler_name or req.sampler_index or "Euler",
        "scheduler": req.scheduler or "automatic",
        "cfg_scale": req.cfg_scale,
        "steps": req.steps,
        "batch_size": req.batch_size,
        "n_iter": req.n_iter,
        "sd_model_name": PurePosixPath(checkpoint).stem if checkpoint else None,
        "sd_model_checkpoint": checkpoint,
        "workflow": flow.name,
        "comfy": {"sampler_name": sampler, "scheduler": scheduler, "loras": [f for f, _ in loras]},
        "warnings": warnings,
    }
    parameters = req.model_dump()
    if isinstance(req, Img2ImgRequest) and not req.include_init_images:
        parameters["init_images"] = parameters["mask"] = None  # as A1111 does
    return {
        "images": images if req.send_images else [],
        "parameters": parameters,
        "info": json.dumps(info),
    }


def checkpoint_for(model: type[BaseModel], override: Any, state: SdapiState) -> str | None:
    """The checkpoint file for this generation: override_settings, else /options, else default."""
    if override is None:
        return state.checkpoint
    choices = terms.allowed(model, "checkpoint")
    found = terms.find_file(str(override), choices) if choices is not None else str(override)
    if found is None:
        raise InvalidRequest(
            f"checkpoint {override!r} is not installed; installed: {', '.join(choices or [])}",
            location="override_settings.sd_model_checkpoint",
        )
    return found


# The answers stream: each image's base64 is made in pieces as the body goes out.
@router.post("/txt2img", responses=ERRORS, response_model=dict[str, Any])
async def txt2img(body: Txt2ImgRequest, sdapi: SdapiDep, caps: InputCapsDep) -> Response:
    """Text to image, as AUTOMATIC1111 answers it: `images` (base64), `parameters`, `info`."""
    return streamed_json(await generate(sdapi, caps, body, "txt2img"))


@router.post("/img2img", responses=ERRORS, response_model=dict[str, Any])
async def img2img(body: Img2ImgRequest, sdapi: SdapiDep, caps: InputCapsDep) -> Response:
    """Image to image (inpainting with `mask`), as AUTOMATIC1111 answers it."""
    return streamed_json(await generate(sdapi, caps, body, "img2img"))


@router.get("/sd-models")
async def sd_models(gateway: GatewayDep) -> list[dict[str, Any]]:
    """The installed checkpoints, as A1111 lists them (`title` is what `/options` takes)."""
    return [
        {
            "title": file,
            "model_name": PurePosixPath(file).stem,
            "hash": None,
            "sha256": None,
            "filename": file,
            "config": None,
        }
        for file in await gateway.comfy.model_files("checkpoints")
    ]


@router.get("/samplers")
async def samplers(sdapi: SdapiDep) -> list[dict[str, Any]]:
    """The A1111 samplers this ComfyUI can run, with the ComfyUI sampler as alias."""
    flow = txt2img_flow(sdapi)
    have = terms.allowed(flow.input_model, "sampler_name") if flow.input_model else None
    return [
        {"name": name, "aliases": [comfy], "options": {}}
        for name, comfy in terms.SAMPLERS.items()
        if have is None or comfy in have
    ]


@router.get("/schedulers")
async def schedulers(sdapi: SdapiDep) -> list[dict[str, Any]]:
    """The A1111 schedulers this ComfyUI can run."""
    flow = txt2img_flow(sdapi)
    have = terms.allowed(flow.input_model, "scheduler") if flow.input_model else None
    return [
        {
            "name": name,
            "label": terms.SCHEDULER_LABELS[name],
            "aliases": [comfy],
            "default_rho": -1,
            "need_inner_model": False,
        }
        for name, comfy in terms.SCHEDULERS.items()
        if have is None or comfy in have
    ]


@router.get("/loras")
async def loras(gateway: GatewayDep) -> list[dict[str, Any]]:
    """The installed LoRAs; `name` is what `<lora:name:weight>` takes."""
    files = await gateway.comfy.model_files("loras")
    return [
        {"name": (stem := PurePosixPath(f).stem), "alias": stem, "path": f, "metadata": {}}
        for f in files
    ]


def txt2img_flow(sdapi: Sdapi) -> Any:
    return generations.workflow(sdapi.registry, sdapi.family, "txt2img")


@router.get("/options")
async def get_options(sdapi: SdapiDep) -> dict[str, Any]:
    """The options this gateway process holds for the API key; `sd_model_checkpoint` is the
    one its generations use."""
    state = sdapi.state
    checkpoint = state.checkpoint or generations.default_checkpoint(txt2img_flow(sdapi))
    return {**state.options, "sd_model_checkpoint": checkpoint, "sd_checkpoint_hash": None}


@router.post("/options", responses={400: ERRORS[400]})
async def set_options(options: dict[str, Any], sdapi: SdapiDep) -> None:
    """Set options (for this API key); `sd_model_checkpoint` (a title from `/sd-models`) changes
    the checkpoint."""
    state = sdapi.state
    if "sd_model_checkpoint" in options:
        flow = txt2img_flow(sdapi)
        try:
            found = checkpoint_for(flow.input_model, options["sd_model_checkpoint"], state)
        except InvalidRequest as e:
            raise InvalidRequest(e.message, location="sd_model_checkpoint") from None
        state.checkpoint = found
    state.options.update({k: v for k, v in options.items() if k != "sd_model_checkpoint"})


@router.get("/progress")
async def get_progress(
    gateway: GatewayDep, caller: CallerDep, states: SdapiStatesDep
) -> dict[str, Any]:
    """Progress (0-1) and seconds left (`eta_relative`) of the API key's running A1111
    generation (an admin key's: the oldest of any key)."""
    return await generations.progress(gateway, caller, states.visible(caller))


@router.post("/interrupt")
async def interrupt(
    gateway: GatewayDep, caller: CallerDep, states: SdapiStatesDep
) -> dict[str, Any]:
    """Stop the API key's running A1111 generations (an admin key: every key's); their
    requests answer with the images made so far."""
    await generations.interrupt(gateway, caller, states.visible(caller))
    return {}


@router.get("/scripts")
async def scripts() -> dict[str, list[str]]:
    """No A1111 scripts or extensions here (clients ask before using ControlNet and the like)."""
    return {"txt2img": [], "img2img": []}
