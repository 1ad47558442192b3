#!/usr/bin/env bash
# Export a classifier and pack it as model_store/<name>.mar. With no arguments: the default model.
# All flags go to `python -m mar_builder build`; see `./build_mar.sh --help`.
set -euo pipefail
python="$(cd "$(dirname "$0")" && pwd)/.venv/bin/python"
if [[ ! -x "$python" ]]; then
  echo "error: .venv is missing; run 'make venv' first" >&2
  exit 1
fi
exec "$python" -m mar_builder build "$@"
