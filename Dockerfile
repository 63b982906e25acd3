# syntax=docker/dockerfile:1
# The gateway, on a base image that holds ComfyUI (docker/comfyui*.Dockerfile):
#
#   docker/build.sh                   # every base and gateway image, or just one:
#   docker build --build-arg BASE_IMAGE=comfy-gateway-base:comfyui0.3.75-cuda12.8-runtime \
#       -t comfy-gateway:cuda12.8-runtime .
#
# The container runs one gateway process as the unprivileged user `gateway`; the gateway starts
# ComfyUI as its child, on 127.0.0.1:8188, and supervises it. Only port 3000 is served.
# Models: mount them at /opt/ComfyUI/models (checkpoints/, loras/, ...). Custom nodes and
# workflows: see docker/custom.Dockerfile, or mount WORKFLOW_DIR.
ARG BASE_IMAGE=comfy-gateway-base:comfyui0.3.75-cuda12.8-runtime
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# A numeric id, so that Kubernetes' runAsNonRoot can check it.
RUN groupadd --gid 10001 gateway \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin gateway

WORKDIR /opt/gateway
# The gateway's own environment, apart from ComfyUI's, so their pins never meet. Dependencies
# first (they change rarely), then the code: an editable install maps `app` to /opt/gateway/app.
COPY pyproject.toml README.md ./
COPY app/__init__.py app/
RUN "${COMFY_PYTHON}" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
    && "${COMFY_PYTHON}" -m venv /opt/gateway/venv \
    && /opt/gateway/venv/bin/pip install --no-cache-dir --editable .
COPY app/ app/
COPY workflows/ workflows/

# ComfyUI writes its inputs, outputs, temp files and user database; the gateway user owns them.
RUN chown -R gateway:gateway "${COMFY_HOME}/input" "${COMFY_HOME}/output" "${COMFY_HOME}/temp" \
        "${COMFY_HOME}/user"

# HOST=:: listens on IPv6 and IPv4, as SaladCloud's container gateway needs. CMD is the
# gateway's setting (the command that starts ComfyUI), not Docker's CMD instruction.
ENV HOST=:: \
    PORT=3000 \
    COMFYUI_PORT_HOST=8188 \
    DIRECT_ADDRESS=127.0.0.1 \
    CMD="${COMFY_PYTHON} main.py --listen 127.0.0.1 --port 8188 --disable-auto-launch ${COMFY_ARGS}" \
    WORKFLOW_DIR=/opt/gateway/workflows \
    LOG_FORMAT=json \
    HOME=/home/gateway \
    PATH=/opt/gateway/venv/bin:${PATH}

USER 10001:10001
EXPOSE 3000
# Start-up includes loading ComfyUI and the warmup graph: give it ten minutes before failing.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '3000'), timeout=4)"]
# On `docker stop` the gateway stops taking work, drains jobs for SHUTDOWN_GRACE_S (give the
# container that long: `docker stop -t`, compose's stop_grace_period), then stops ComfyUI.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "app"]
