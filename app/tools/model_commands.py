"""`comfy-gateway-cli models pull|ls`: fetch a model onto a gateway, list what it has.

    comfy-gateway-cli models pull https://example.com/style.safetensors --folder loras
    comfy-gateway-cli models ls --folder loras

`pull` asks the gateway to download the file (POST /models/download), follows the download's
events with a progress bar, and prints `folder/filename` once it is in place. `ls` prints every
model file ComfyUI lists, with what the gateway knows of the ones it downloaded.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, TextIO

import httpx

from app.tools.answers import describe, read_events

BAR_WIDTH = 30


def add_commands(commands: Any) -> None:
    """The `models` command and its subcommands, on the CLI's parser."""
    models = commands.add_parser("models", help="download models onto a gateway, list them")
    actions = models.add_subparsers(dest="action", required=True)
    pull_parser = actions.add_parser("pull", help="download a model into a model folder")
    pull_parser.add_argument("source", help="the model's http(s):// or s3:// URL")
    pull_parser.add_argument("--folder", required=True, help="checkpoints, loras, vae, ...")
    pull_parser.add_argument("--filename", help="its name there (default: the server's)")
    pull_parser.add_argument("--sha256", help="its SHA-256: other bytes are deleted and fail")
    pull_parser.add_argument("--pin", action="store_true", help="never evict it")
    pull_parser.set_defaults(handler=pull)
    ls_parser = actions.add_parser("ls", help="list the model files, and which were downloaded")
    ls_parser.add_argument("--folder", help="only this folder")
    ls_parser.set_defaults(handler=ls)
    for parser in (pull_parser, ls_parser):
        parser.add_argument("--url", default="http://localhost:3000", help="the gateway's URL")
        parser.add_argument(
            "--api-key",
            default=os.environ.get("COMFY_GATEWAY_API_KEY"),
            help="the gateway's API key (default: $COMFY_GATEWAY_API_KEY)",
        )


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f} MiB"


class ByteBar:
    """Bytes of total as a bar on a terminal; one line per 25 % elsewhere (logs, CI)."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.live = out.isatty()
        self.started = time.monotonic()
        self.shown = -1

    def show(self, state: dict[str, Any]) -> None:
        got, total = state.get("bytes") or 0, state.get("total")
        rate = mib(got / max(time.monotonic() - self.started, 1e-3)) + "/s"
        if not total:
            line = f"{mib(got)} {rate}"
            quarter = 0
        else:
            filled = BAR_WIDTH * got // total
            line = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {mib(got)} of {mib(total)} {rate}"
            quarter = 4 * got // total
        if self.live:
            self.out.write("\r\x1b[K" + line)
        elif quarter != self.shown:
            self.shown = quarter
            self.out.write(line + "\n")
        self.out.flush()


def pull(args: argparse.Namespace, err: TextIO = sys.stderr) -> int:
    body: dict[str, Any] = {"url": args.source, "folder": args.folder, "pin": args.pin}
    if args.filename:
        body["filename"] = args.filename
    if args.sha256:
        body["sha256"] = args.sha256
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    base = args.url.rstrip("/")
    bar = ByteBar(err)
    try:
        answer = httpx.post(f"{base}/models/download", json=body, headers=headers, timeout=60)
        if answer.status_code not in (200, 202):
            err.write(f"error: HTTP {answer.status_code}: {describe(answer)}\n")
            return 1
        download = answer.json()
        events = f"{base}/models/downloads/{download['id']}/events"
        timeout = httpx.Timeout(30.0, read=None)  # a large file may take long between events
        with httpx.stream("GET", events, headers=headers, timeout=timeout) as stream:
            for event, data in read_events(stream):
                if event == "progress":
                    bar.show(data)
                elif event == "done":
                    bar.show(data)
                    err.write("\n" if bar.live else "")
                    kept = "downloaded" if data["fetched"] else "already there"
                    err.write(f"{kept}: sha256 {data.get('sha256') or '(not computed)'}\n")
                    print(f"{data['folder']}/{data['filename']}")
                    return 0
                elif event == "failed":
                    err.write(f"\nerror: {data.get('code')}: {data.get('error')}\n")
                    return 1
    except httpx.HTTPError as e:
        err.write(f"error: cannot reach the gateway at {args.url}: {e}\n")
        return 1
    err.write("error: the event stream ended before the download did\n")
    return 1


def ls(args: argparse.Namespace, err: TextIO = sys.stderr) -> int:
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    base = args.url.rstrip("/")
    try:
        listing = httpx.get(f"{base}/models", headers=headers, timeout=60)
        cache = httpx.get(f"{base}/models/cache", headers=headers, timeout=60)
    except httpx.HTTPError as e:
        err.write(f"error: cannot reach the gateway at {args.url}: {e}\n")
        return 1
    for answer in (listing, cache):
        if answer.status_code != 200:
            err.write(f"error: HTTP {answer.status_code}: {describe(answer)}\n")
            return 1
    cached = {(m["folder"], m["filename"]): m for m in cache.json()["models"]}
    for folder, files in sorted(listing.json().items()):
        if (args.folder and folder != args.folder) or not files:
            continue
        print(f"{folder}/")
        for name in files:
            model = cached.get((folder, name))
            if model is None:
                print(f"  {name}")
                continue
            notes = [mib(model["bytes"]), f"last used {model['last_used']}"]
            notes += [f"in use by {model['in_use']}"] if model["in_use"] else []
            notes += ["pinned"] if model["pinned"] else []
            print(f"  {name}  [downloaded: {', '.join(notes)}]")
    return 0
