"""What reading a request body costs: Starlette's `json.loads` against app.core.strict_json.

Times make bench's trivial graph (EmptyImage -> SaveImage), and graphs of about 5, 10 and 20 KB
in ComfyUI's API format (checkpoint, a stack of LoRAs, prompts, samplers with a hires pass,
decode, save: the node mix of a real SDXL graph, so a realistic share of floats, links and
strings), once as ASCII and once with an emoji escaped as json.dumps writes it by default (the
case that makes the reader look at surrogates): both readers on the same bytes, alternating,
best of several rounds.

    .venv/bin/python -m bench.json_parse [--rounds 7] [--reps 500]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from app.core import strict_json
from app.core.schemas import EXAMPLE_GRAPH

PROMPT = (
    "a photograph of an astronaut riding a horse on the moon, highly detailed, dramatic "
    "lighting, 35mm, bokeh, masterpiece, best quality"
)


def stage(first: int, model: str, clip: str) -> tuple[dict[str, Any], str, str]:
    """One LoRA, two prompts, a sampler, a hires pass, a decode and a save: 9 nodes."""
    n = [str(first + i) for i in range(9)]
    nodes = {
        n[0]: {"class_type": "LoraLoader", "inputs": {"model": [model, 0], "clip": [clip, 1],
               "lora_name": "detail_tweaker_xl.safetensors", "strength_model": 0.8,
               "strength_clip": 0.8}},
        n[1]: {"class_type": "CLIPTextEncode", "inputs": {"clip": [n[0], 1], "text": PROMPT},
               "_meta": {"title": "Positive"}},
        n[2]: {"class_type": "CLIPTextEncode", "inputs": {"clip": [n[0], 1],
               "text": "blurry, low quality, watermark, text"}, "_meta": {"title": "Negative"}},
        n[3]: {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024,
               "batch_size": 1}},
        n[4]: {"class_type": "KSampler", "inputs": {"model": [n[0], 0], "positive": [n[1], 0],
               "negative": [n[2], 0], "latent_image": [n[3], 0], "seed": 156680208700286,
               "steps": 30, "cfg": 6.5, "sampler_name": "dpmpp_2m", "scheduler": "karras",
               "denoise": 1}},
        n[5]: {"class_type": "LatentUpscaleBy", "inputs": {"samples": [n[4], 0],
               "upscale_method": "nearest-exact", "scale_by": 1.5}},
        n[6]: {"class_type": "KSampler", "inputs": {"model": [n[0], 0], "positive": [n[1], 0],
               "negative": [n[2], 0], "latent_image": [n[5], 0], "seed": 156680208700287,
               "steps": 15, "cfg": 6.5, "sampler_name": "dpmpp_2m", "scheduler": "karras",
               "denoise": 0.45}},
        n[7]: {"class_type": "VAEDecode", "inputs": {"samples": [n[6], 0], "vae": ["1", 2]}},
        n[8]: {"class_type": "SaveImage", "inputs": {"images": [n[7], 0],
               "filename_prefix": "bench"}},
    }  # fmt: skip
    return nodes, n[0], n[0]


def graph_of(size: int, text: str = PROMPT) -> bytes:
    """A POST /prompt body of about `size` bytes."""
    graph: dict[str, Any] = {
        "1": {"class_type": "CheckpointLoaderSimple",
              "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
    }  # fmt: skip
    model = clip = "1"
    while len(json.dumps(graph)) < size:
        nodes, model, clip = stage(len(graph) + 1, model, clip)
        graph.update(nodes)
    for node in graph.values():
        if node["class_type"] == "CLIPTextEncode" and node["inputs"]["text"] == PROMPT:
            node["inputs"]["text"] = text
    return json.dumps({"prompt": graph, "id": "bench-1"}).encode()


def best_of(read: Callable[[bytes], Any], body: bytes, rounds: int, reps: int) -> list[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(reps):
            read(body)
        times.append((time.perf_counter() - started) / reps * 1e6)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reps", type=int, default=500)
    args = parser.parse_args()
    print(f"{'body':>24} {'json.loads':>12} {'strict':>10} {'extra':>8}")
    trivial = json.dumps({"prompt": EXAMPLE_GRAPH}).encode()  # make bench's graph
    cases = [("trivial", trivial)] + [
        (label, graph_of(size, text))
        for size in (5_000, 10_000, 20_000)
        for label, text in (("ascii", PROMPT), ("emoji", PROMPT + " \U0001f680"))
    ]
    for label, body in cases:
        assert strict_json.loads(body) == json.loads(body)
        plain: list[float] = []
        strict: list[float] = []
        for _ in range(args.rounds):  # alternating, so drift hits both alike
            plain += best_of(json.loads, body, 1, args.reps)
            strict += best_of(strict_json.loads, body, 1, args.reps)
        a, b = min(plain), min(strict)
        print(f"{len(body):>8} B {label:>7} graph {a:>9.1f} µs {b:>7.1f} µs {b / a - 1:>+7.0%}")


if __name__ == "__main__":
    main()
