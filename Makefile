# Two commands do everything on a fresh machine: `make run` and `make test`.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
COMFY_STAMP := .comfyui/.installed
TINY_MODELS := .cache/models/checkpoints/tiny-sd15-random.safetensors
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: run test unit integration check bench comfyui models chromium clean

run: $(BIN)/.installed $(COMFY_STAMP)  ## Start the gateway on :3000 with its ComfyUI on :8188
	$(BIN)/python -m app

test: $(BIN)/.installed $(COMFY_STAMP) $(TINY_MODELS) chromium  ## Run every test, unit and integration
	$(BIN)/pytest tests --durations=10

unit: $(BIN)/.installed  ## Only the tests that need no ComfyUI
	$(BIN)/pytest tests/unit

check: $(BIN)/.installed  ## Lint, format check and type check
	$(BIN)/ruff check app tests bench scripts workflows docker
	$(BIN)/ruff format --check app tests bench scripts workflows docker
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile docker/*.Dockerfile
	$(BIN)/shellcheck docker/build.sh

bench: $(BIN)/.installed $(COMFY_STAMP)  ## Gateway overhead against direct ComfyUI
	$(BIN)/python bench/overhead.py

comfyui: $(COMFY_STAMP)  ## Install the bundled ComfyUI (CPU) into .comfyui/

models: $(TINY_MODELS)  ## Generate the tiny random-weight test checkpoint into .cache/

chromium:  ## Debian's chromium, for the test that loads /docs (installed only if missing)
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
		chromium >/dev/null; }

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]' 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -c "import app, fastapi, pytest"
	touch $@

$(COMFY_STAMP): scripts/install_comfyui.sh requirements/comfyui.txt
	bash scripts/install_comfyui.sh

$(TINY_MODELS): scripts/make_tiny_ckpt.py $(COMFY_STAMP)
	.comfyui/venv/bin/python scripts/make_tiny_ckpt.py --out-dir .cache/models

clean:  ## Remove the environments, the bundled ComfyUI and cached models
	rm -rf $(VENV) .comfyui .cache
