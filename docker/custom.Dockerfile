# syntax=docker/dockerfile:1
# Your own image: the gateway image plus your custom nodes and workflow modules. Build it from a
# folder that holds
#
#   custom_nodes/<node>/...         each node as you would put it in ComfyUI/custom_nodes
#                                   (a requirements.txt in it is installed)
#   workflows/<group>/<name>.py     workflow modules; they replace the shipped ones
#
#   docker build -f /path/to/comfy-gateway/docker/custom.Dockerfile \
#       --build-arg GATEWAY_IMAGE=comfy-gateway:cuda12.8-runtime -t my-gateway:1 .
#
# Models are better mounted at /opt/ComfyUI/models than baked in: images of many GB are slow to
# pull on every new node. To bake them in anyway, add `COPY models/ /opt/ComfyUI/models/`.
ARG GATEWAY_IMAGE=comfy-gateway:cuda12.8-runtime
FROM ${GATEWAY_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
USER 0
COPY custom_nodes/ /opt/ComfyUI/custom_nodes/
# Into ComfyUI's environment, not the gateway's.
RUN for requirements in /opt/ComfyUI/custom_nodes/*/requirements.txt; do \
        [[ -e $requirements ]] || continue; \
        "${COMFY_PYTHON}" -m pip install --no-cache-dir -r "$requirements"; \
    done
COPY workflows/ /opt/gateway/workflows/
USER 10001:10001
