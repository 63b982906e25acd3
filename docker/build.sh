#!/usr/bin/env bash
# Builds the base images (ComfyUI on CUDA runtime, CUDA devel, and CPU) and the gateway image on
# each. Run from anywhere; needs Docker with BuildKit. Set PUSH_TO=registry.example.com/team to
# tag for and push to your registry.
#
#   docker/build.sh                # all three variants
#   docker/build.sh cpu            # only the CPU variant
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
comfyui_version=0.3.75
cuda_version=12.8
gateway_version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml")
prefix=${PUSH_TO:+$PUSH_TO/}

build() {  # build <variant> <base dockerfile> [base build args...]
    local variant=$1 dockerfile=$2
    shift 2
    local base="${prefix}comfy-gateway-base:comfyui${comfyui_version}-${variant}"
    local gateway="${prefix}comfy-gateway:${gateway_version}-${variant}"
    docker build -f "$here/$dockerfile" --build-arg "COMFYUI_VERSION=$comfyui_version" "$@" \
        -t "$base" "$here"
    docker build --build-arg "BASE_IMAGE=$base" -t "$gateway" \
        -t "${prefix}comfy-gateway:${variant}" "$root"
    if [[ -n ${PUSH_TO:-} ]]; then
        docker push "$base"
        docker push "$gateway"
        docker push "${prefix}comfy-gateway:${variant}"
    fi
}

if (($# == 0)); then
    set -- cuda-runtime cuda-devel cpu
fi
for variant in "$@"; do
    case $variant in
        cuda-runtime | cuda-devel)
            flavor=${variant#cuda-}
            build "cuda${cuda_version}-${flavor}" comfyui.Dockerfile \
                --build-arg "FLAVOR=$flavor" --build-arg "CUDA_VERSION=$cuda_version"
            ;;
        cpu) build cpu comfyui-cpu.Dockerfile ;;
        *)
            echo "unknown variant $variant (cuda-runtime, cuda-devel, cpu)" >&2
            exit 2
            ;;
    esac
done
