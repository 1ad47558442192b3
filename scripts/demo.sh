#!/usr/bin/env bash
# `make demo`: serve model_store/classifier.mar on this checkout's own TorchServe, classify the sample photos.
# Arguments go to `mar-builder serve`: --ports BASE|auto, --config FILE, --model-store DIR, --front HOST:PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
py=.venv/bin/python
"$py" -m mar_builder stop  # this checkout's previous demo, if any; no other server
"$py" -m mar_builder serve classifier "$@"
"$py" -m mar_builder predict samples/*.jpg samples/*.png --model classifier

cat <<'MSG'

This checkout's TorchServe is still running. Next:
  make predict IMG=samples/coffee.png    # or .venv/bin/mar-builder predict IMAGE... [--json]
  make scale WORKERS=3
  make serve NAME="classifier landmarks" # archives of model_store/, after make stop
  make stop                              # stops this checkout's server, no other
MSG
