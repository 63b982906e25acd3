"""The command line that starts one ComfyUI instance: CMD with its placeholders filled in, or
the bundled CPU install with the gateway's folders."""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path

from app.core.settings import BUNDLED_COMFY_DIR, Settings

# Model folders ComfyUI 0.3.75 knows; MODEL_DIR maps each to a subfolder of the same name.
MODEL_FOLDERS = (
    "checkpoints", "loras", "vae", "text_encoders", "clip", "diffusion_models", "unet",
    "clip_vision", "style_models", "embeddings", "diffusers", "vae_approx", "controlnet",
    "t2i_adapter", "gligen", "upscale_models", "latent_upscale_models", "hypernetworks",
    "photomaker", "classifiers", "model_patches", "audio_encoders",
)  # fmt: skip


class CommandLine:
    """The argv of instance `index`, and the files it needs (a model-paths YAML for MODEL_DIR
    and MODEL_CACHE_DIR)."""

    def __init__(self, settings: Settings, index: int) -> None:
        self.settings = settings
        self.index = index
        self.port = settings.instance_port(index)
        self.gpu = settings.instance_gpu(index)
        self.pooled = settings.instance_count > 1
        self._model_paths: Path | None = None  # the YAML written for MODEL_DIR, MODEL_CACHE_DIR

    def argv(self) -> list[str]:
        """The argv that starts ComfyUI: CMD with its {port}, {gpu}, {index} and
        {preview_method} filled in, or the bundled CPU install."""
        s = self.settings
        if s.cmd:
            fields = {
                "port": self.port, "gpu": self.gpu or "", "index": self.index,
                "preview_method": s.preview_method,
            }  # fmt: skip
            return [part.format_map(fields) for part in shlex.split(s.cmd)]
        argv = [
            str(self.python()), "main.py", "--cpu",
            "--listen", s.direct_address, "--port", str(self.port),
            "--disable-auto-launch", "--disable-api-nodes",
            "--preview-method", s.preview_method,
        ]  # fmt: skip
        if self.pooled:
            # ComfyUI empties its temp folder at start: one each, or a restart would delete
            # the previews of the others. Its database gets one each too (no lock fights).
            own = Path(tempfile.gettempdir()) / f"comfy-gateway-{os.getpid()}-{self.index}"
            argv += ["--temp-directory", str(own)]
            argv += ["--database-url", f"sqlite:///{own}.db"]
        if s.input_dir:
            argv += ["--input-directory", str(s.input_dir)]
        if s.output_dir:
            argv += ["--output-directory", str(s.output_dir)]
        if paths := self._model_paths_file():
            argv += ["--extra-model-paths-config", str(paths)]
        return argv

    def python(self) -> Path:
        """The interpreter of the default command: the environment that the install script made
        beside COMFY_HOME (`.comfyui/<version>/venv`), else the bundled ComfyUI's."""
        beside = self.settings.comfy_home.parent / "venv" / "bin" / "python"
        return beside if beside.exists() else BUNDLED_COMFY_DIR / "venv" / "bin" / "python"

    def _model_paths_file(self) -> Path | None:
        """The YAML that adds MODEL_DIR, and MODEL_CACHE_DIR where it differs, to ComfyUI's model
        search paths; None when neither needs adding."""
        s = self.settings
        lines: list[str] = []
        if s.model_dir:
            lines += ["gateway:", f"  base_path: {s.model_dir.resolve()}", "  is_default: true"]
            lines += [f"  {folder}: {folder}" for folder in MODEL_FOLDERS]
        cache = s.model_cache_path.resolve()
        if cache not in {p.resolve() for p in (s.model_dir, s.comfy_home / "models") if p}:
            lines += ["gateway_cache:", f"  base_path: {cache}"]
            lines += [f"  {folder}: {folder}" for folder in MODEL_FOLDERS]
        if not lines:
            return None
        if self._model_paths is None:
            fd, name = tempfile.mkstemp(prefix="comfy-gateway-model-paths-", suffix=".yaml")
            os.close(fd)
            self._model_paths = Path(name)
        self._model_paths.write_text("\n".join(lines) + "\n")
        return self._model_paths

    def clean_up(self) -> None:
        if self._model_paths is not None:
            self._model_paths.unlink(missing_ok=True)
