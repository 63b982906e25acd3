#!/usr/bin/env bash
# integration_suites.sh HOME...: the integration suite against each ComfyUI folder given, all at
# once. A suite spends most of its time waiting on its ComfyUI, so two of them share CI's two
# cores well. Each line is prefixed with its ComfyUI's version; the script fails when any suite
# failed, once all of them have ended.
set -euo pipefail
cd "$(dirname "$0")/.."
pids=()
versions=()
for home in "$@"; do
    version=$(basename "$(dirname "$home")")
    (
        TEST_COMFY_HOME=$home .venv/bin/pytest tests/integration -p no:cacheprovider \
            --durations=10 2>&1 | sed -u "s/^/[$version] /"
    ) &
    pids+=("$!")
    versions+=("$version")
done
status=0
for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then
        echo "[${versions[$i]}] the integration suite passed"
    else
        echo "[${versions[$i]}] the integration suite FAILED (its lines above say why)"
        status=1
    fi
done
exit "$status"
