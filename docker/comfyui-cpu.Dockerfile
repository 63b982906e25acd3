# syntax=docker/dockerfile:1
# Base image: ComfyUI (pinned) on CPU-only PyTorch, for trying the gateway without a GPU.
# Real models are slow on a CPU; small graphs and tiny checkpoints run fine.
#
#   docker build -f docker/comfyui-cpu.Dockerfile -t comfy-gateway-base:comfyui0.3.75-cpu docker/
FROM python:3.11-slim-bookworm

ARG COMFYUI_VERSION=0.3.75
# A matching trio from PyTorch's CPU index (its torchvision is built against its torch).
ARG TORCH_VERSION=2.8.0
ARG TORCHVISION_VERSION=0.23.0
ARG TORCHAUDIO_VERSION=2.8.0
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Not pinned: Debian and Ubuntu drop superseded versions from their mirrors, so a pin breaks
# the build within weeks; the base image's tag fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates git tini libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

RUN python -m pip install --index-url https://download.pytorch.org/whl/cpu \
        "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}" \
        "torchaudio==${TORCHAUDIO_VERSION}"

RUN git clone --depth 1 --branch "v${COMFYUI_VERSION}" \
        https://github.com/comfyanonymous/ComfyUI.git /opt/ComfyUI \
    && rm -rf /opt/ComfyUI/.git
WORKDIR /opt/ComfyUI

RUN grep -vE '^(torch|torchvision|torchaudio)([<>=!~ ;]|$)' requirements.txt > /tmp/requirements.txt \
    && python -m pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    && python -c "import torch, torchvision; print('torch', torch.__version__)" \
    && mkdir -p input output temp user models custom_nodes

ENV COMFY_HOME=/opt/ComfyUI \
    COMFY_PYTHON=/usr/local/bin/python \
    COMFY_ARGS="--cpu"
RUN test -x "${COMFY_PYTHON}"
