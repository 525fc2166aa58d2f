#!/usr/bin/env bash
# Runs the Python SDK tests (tests/python) against the built llmtap binary.
# Makes a venv under target/pyenv with the pinned requirements on first use, and again only when
# requirements.txt changes. Extra arguments go to pytest (e.g. `tests/python/run.sh -k anthropic`).
# LLMTAP_BIN overrides the binary (default target/debug/llmtap; build it with `cargo build --bin llmtap`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/target/pyenv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
  echo "$want" >"$stamp"
fi

export LLMTAP_BIN="${LLMTAP_BIN:-$repo/target/debug/llmtap}"
cd "$here"
# No .pytest_cache in the source tree; bytecode stays out of it too.
exec env PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest -p no:cacheprovider -q "$@"
