"""comfy-gateway: a production HTTP API in front of a supervised ComfyUI."""

__version__ = "0.1.0"
