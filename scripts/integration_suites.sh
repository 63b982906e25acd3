#!/usr/bin/env bash
# integration_suites.sh HOME...: the integration suite against each ComfyUI folder given, all at
# once. A suite spends most of its time waiting on its ComfyUI, so two of them share CI's two
# cores well. Each line is prefixed with its ComfyUI's version; the script fails when any suite
# failed, once all of them have ended, and then prints each failed suite's summary again last,
# where a log cut to its tail still shows it.
set -euo pipefail
cd "$(dirname "$0")/.."
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
pids=()
versions=()
for home in "$@"; do
    version=$(basename "$(dirname "$home")")
    (
        TEST_COMFY_HOME=$home .venv/bin/pytest tests/integration -p no:cacheprovider \
            --durations=10 2>&1 | sed -u "s/^/[$version] /" | tee "$logs/$version.log"
    ) &
    pids+=("$!")
    versions+=("$version")
done
status=0
failed=()
for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then
        echo "[${versions[$i]}] the integration suite passed"
    else
        echo "[${versions[$i]}] the integration suite FAILED (its lines above say why)"
        failed+=("${versions[$i]}")
        status=1
    fi
done
for version in "${failed[@]}"; do
    echo "== [$version] what failed, again =="
    if grep -q 'short test summary info' "$logs/$version.log"; then
        sed -n '/short test summary info/,$p' "$logs/$version.log" | tail -n 40
    else
        tail -n 40 "$logs/$version.log"
    fi
done
exit "$status"
