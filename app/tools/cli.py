"""`comfy-gateway-cli`: run a job on a gateway, fetch and list its models, or write a workflow
module from a graph (`python -m app.tools.cli` where the package is not installed).

    comfy-gateway-cli run --url http://localhost:3000 workflows/sd15/txt2img \\
        --input prompt="a cat" --input steps=20 --out out/
    comfy-gateway-cli run --url http://localhost:3000 --graph graph.json --out out/
    comfy-gateway-cli models pull https://example.com/style.safetensors --folder loras
    comfy-gateway-cli models ls
    comfy-gateway-cli scaffold graph.json workflows/mine/flow.py

Exit status: 0 when the outputs were written (the model is in place, the module loads), 1 when
the job, the download, the request or the module failed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import httpx

from app.tools import model_commands, scaffold
from app.tools.answers import describe, read_events

BAR_WIDTH = 30


def parse_inputs(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs; a value that parses as JSON (20, 1.5, true, [..]) is taken as such."""
    inputs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--input takes key=value, got {pair!r}")
        try:
            inputs[key] = json.loads(raw)
        except ValueError:
            inputs[key] = raw
    return inputs


class ProgressView:
    """A one-line progress bar on a terminal, plain lines elsewhere (logs, CI)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.live = out.isatty()

    def show(self, event: str, data: dict[str, Any]) -> None:
        if event == "progress" and data.get("max"):
            value, total = data["value"], data["max"]
            filled = BAR_WIDTH * value // total
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            line = f"[{bar}] step {value}/{total} {node_label(data)}"
            if self.live:
                self.out.write("\r" + line)
            elif value == total:
                self.out.write(line + "\n")
        elif event in ("queued", "running", "executing"):
            detail = f" {node_label(data)}" if event == "executing" else ""
            self.out.write(("\r\x1b[K" if self.live else "") + f"{event}{detail}\n")
        self.out.flush()


def node_label(data: dict[str, Any]) -> str:
    """A node as people call it (its title or class_type), else by its id."""
    return str(data.get("node_name") or f"node {data.get('node')}")


PREVIEW_NAME = "preview"  # --previews writes DIR/preview.jpg (or .png, as ComfyUI sent it)


def write_preview(data: dict[str, Any], folder: Path) -> Path | None:
    """Write a `preview` event's image as folder/preview.<ext>, replacing the last one whole."""
    head, _, encoded = str(data.get("image", "")).partition(";base64,")
    ext = {"data:image/jpeg": "jpg", "data:image/png": "png"}.get(head)
    if ext is None:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{PREVIEW_NAME}.{ext}"
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(base64.b64decode(encoded))
    partial.replace(path)  # a viewer never reads half a file
    return path


def write_outputs(result: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for content, filename in zip(result["images"], result["filenames"], strict=True):
        path = out_dir / Path(filename).name  # never outside out_dir
        path.write_bytes(base64.b64decode(content))
        written.append(path)
    return written


def run(args: argparse.Namespace, err: TextIO = sys.stderr) -> int:
    if args.graph:
        path, body = "/prompt", {"prompt": json.loads(Path(args.graph).read_text())}
    elif args.workflow:
        path, body = "/" + args.workflow.strip("/"), {"input": parse_inputs(args.input)}
    else:
        err.write("name a workflow (e.g. workflows/sd15/txt2img) or --graph FILE\n")
        return 2
    if args.id:
        body["id"] = args.id
    view = ProgressView(err)
    headers = {"Accept": "text/event-stream"}
    if args.api_key:
        headers["X-API-Key"] = args.api_key
    timeout = httpx.Timeout(30.0, read=None)  # a job may run for a long time between events
    try:
        with httpx.stream("POST", args.url.rstrip("/") + path, json=body, headers=headers,
                          timeout=timeout) as response:  # fmt: skip
            if response.status_code != 200:
                response.read()
                err.write(f"error: HTTP {response.status_code}: {describe(response)}\n")
                return 1
            for event, data in read_events(response):
                view.show(event, data)
                if event == "preview" and args.previews:
                    write_preview(data, Path(args.previews))
                if event == "complete":
                    for written in write_outputs(data, Path(args.out)):
                        print(written)
                    return 0
                if event == "failed":
                    err.write(f"\nerror: {data.get('code')}: {data.get('error')}\n")
                    return 1
    except httpx.HTTPError as e:
        err.write(f"error: cannot reach the gateway at {args.url}: {e}\n")
        return 1
    err.write("error: the event stream ended before the job did\n")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="comfy-gateway-cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run a workflow or a graph and save its outputs")
    run_parser.add_argument(
        "workflow", nargs="?", help="a workflow route, e.g. workflows/sd15/txt2img"
    )
    run_parser.add_argument("--url", default="http://localhost:3000", help="the gateway's base URL")
    run_parser.add_argument("--graph", help="a ComfyUI API-format graph file, run via /prompt")
    run_parser.add_argument("--input", action="append", default=[], metavar="KEY=VALUE",
                            help="a workflow input; repeat for more")  # fmt: skip
    run_parser.add_argument("--id", help="the request id")
    run_parser.add_argument(
        "--api-key",
        default=os.environ.get("COMFY_GATEWAY_API_KEY"),
        help="the gateway's API key (default: $COMFY_GATEWAY_API_KEY)",
    )
    run_parser.add_argument("--out", default="out", help="folder for the outputs (default out/)")
    run_parser.add_argument(
        "--previews",
        metavar="DIR",
        help=f"while the job runs, write its newest latent preview to DIR/{PREVIEW_NAME}.jpg "
        f"(or {PREVIEW_NAME}.png, as ComfyUI sends it), replaced as newer ones arrive",
    )
    run_parser.set_defaults(handler=run)
    model_commands.add_commands(commands)
    scaffold.add_command(commands)
    args = parser.parse_args(argv)
    handler: Any = args.handler
    return int(handler(args))


if __name__ == "__main__":
    sys.exit(main())
