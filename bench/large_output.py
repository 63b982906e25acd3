"""Peak memory of the gateway while it returns one large output (about 50 MB) as base64.

    .venv/bin/python -m bench.large_output [--megapixels 16]

A random RGB image of N megapixels barely compresses, so ComfyUI's SaveImage writes a PNG of
about 3 bytes a pixel: 16 MP is ~48 MiB. The bench puts it in the gateway's input folder, runs
LoadImage -> SaveImage through POST /prompt, and reads the gateway's peak RSS (VmHWM) before and
after. The issue's bar: no more than about two copies of the output in memory at once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import tempfile
import time
from pathlib import Path

import httpx
from PIL import Image

from tests.gateway_process import GatewayProcess


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def noisy_png(path: Path, megapixels: float) -> None:
    side = int((megapixels * 1e6) ** 0.5)
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(path, compress_level=1)


async def main(megapixels: float) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-large-output-") as workdir:
        gateway = GatewayProcess(Path(workdir), LOG_LEVEL="warning", MAX_BODY_SIZE_MB="1")
        noisy_png(gateway.input_dir / "big.png", megapixels)
        await asyncio.to_thread(gateway.start, timeout_s=240)
        try:
            await measure(gateway)
        finally:
            await asyncio.to_thread(gateway.stop)


async def measure(gateway: GatewayProcess) -> None:
    pid = gateway.pid
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "big.png"}},
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "big"},
        },
    }
    before = peak_rss_mib(pid)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=600) as http:
        response = await http.post(f"{gateway.url}/prompt", json={"prompt": graph})
    elapsed = time.monotonic() - started
    response.raise_for_status()
    body = response.json()
    output_mib = len(base64.b64decode(body["images"][0])) / 2**20
    encoded_mib = len(body["images"][0]) / 2**20
    after = peak_rss_mib(pid)
    growth = after - before
    print(f"output file:   {output_mib:7.1f} MiB, {encoded_mib:.1f} MiB as base64")
    print(f"gateway peak:  {before:7.1f} MiB RSS before, {after:.1f} MiB after")
    print(
        f"peak growth:   {growth:7.1f} MiB = {growth / output_mib:.2f} x the file, "
        f"{growth / encoded_mib:.2f} x its base64"
    )
    print(f"request time:  {elapsed:7.1f} s (ComfyUI decoding and re-encoding included)")
    verdict = "PASS" if growth <= 2.1 * encoded_mib else "MISS"
    print(f"at most about two copies of the base64 output at once: {verdict}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--megapixels", type=float, default=16.8)
    asyncio.run(main(parser.parse_args().megapixels))
