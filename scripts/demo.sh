#!/usr/bin/env bash
# `make demo`: serve model_store/classifier.mar with config.properties and classify the sample photos.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
inference=$(sed -n 's/^inference_address=//p' config.properties)
metrics=$(sed -n 's/^metrics_address=//p' config.properties)

"$bin/torchserve" --stop >/dev/null 2>&1 || true  # a previous demo's server, if any
"$bin/torchserve" --start --ts-config config.properties --models classifier=classifier.mar >/dev/null
echo "waiting for the classifier workers to be READY..."
"$bin/python" -m mar_builder.local_server wait-ready classifier

KEY=$("$bin/python" -c 'import json; print(json.load(open("key_file.json"))["inference"]["key"])')
for photo in samples/*.jpg samples/*.png; do
  echo "== $photo"
  curl -sS -H "Authorization: Bearer $KEY" -T "$photo" "$inference/predictions/classifier"
  echo
done

cat <<MSG

TorchServe is still running ($inference). Next:
  KEY=\$(python3 -c 'import json; print(json.load(open("key_file.json"))["inference"]["key"])')
  curl -H "Authorization: Bearer \$KEY" -T samples/chelsea.png $inference/predictions/classifier
  curl -H "Authorization: Bearer \$KEY" -F data=@samples/coffee.png $inference/predictions/classifier
  curl -s $metrics/metrics | grep -E '^(ts_inference_requests_total|ImageDecodeTime_count|RejectedRequests)'
  make scale WORKERS=3
  make stop
MSG
