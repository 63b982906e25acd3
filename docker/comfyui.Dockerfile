# syntax=docker/dockerfile:1
# Base image: ComfyUI (pinned) on PyTorch with CUDA. The gateway image (../Dockerfile) builds on it.
#
#   docker build -f docker/comfyui.Dockerfile --build-arg FLAVOR=runtime \
#       -t comfy-gateway-base:comfyui0.3.75-cuda12.8-runtime docker/
#
# FLAVOR=runtime is what serving needs; FLAVOR=devel adds nvcc and the CUDA headers, for custom
# nodes that compile extensions at install time. docker/build.sh builds every variant.
ARG PYTORCH_VERSION=2.8.0
ARG CUDA_VERSION=12.8
ARG FLAVOR=runtime
FROM pytorch/pytorch:${PYTORCH_VERSION}-cuda${CUDA_VERSION}-cudnn9-${FLAVOR}

ARG COMFYUI_VERSION=0.3.75
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# git: custom nodes are installed from git; tini: PID 1 that forwards signals and reaps
# orphans; libgl1/libglib2.0-0: OpenCV, which many custom nodes import.
# Not pinned: Debian and Ubuntu drop superseded versions from their mirrors, so a pin breaks
# the build within weeks; the base image's tag fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git tini libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

RUN git clone --depth 1 --branch "v${COMFYUI_VERSION}" \
        https://github.com/comfyanonymous/ComfyUI.git /opt/ComfyUI \
    && rm -rf /opt/ComfyUI/.git
WORKDIR /opt/ComfyUI

# torch, torchvision and torchaudio come with the base image, built for its CUDA; ComfyUI's
# list names them unpinned, and pip would otherwise be free to swap them for other builds.
RUN grep -vE '^(torch|torchvision|torchaudio)([<>=!~ ;]|$)' requirements.txt > /tmp/requirements.txt \
    && python -m pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    && python -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
    && mkdir -p input output temp user models custom_nodes

# What the gateway image needs to know to start this ComfyUI.
ENV COMFY_HOME=/opt/ComfyUI \
    COMFY_PYTHON=/opt/conda/bin/python \
    COMFY_ARGS=""
RUN test -x "${COMFY_PYTHON}"
