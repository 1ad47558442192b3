#!/usr/bin/env bash
# TorchServe's frontend needs Java 17 or newer. Install it with apt when we can, else say how.
set -euo pipefail
version=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n1 || true)
if [[ -n "$version" && "$version" -ge 17 ]]; then
  exit 0
fi
if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "Java 17 not found (got '${version:-none}'); installing openjdk-17-jre-headless with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  exit 0
fi
echo "error: TorchServe needs Java 17 (found '${version:-none}'). Install it, e.g.:" >&2
echo "  sudo apt-get install openjdk-17-jre-headless" >&2
exit 1
