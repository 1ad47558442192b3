#!/usr/bin/env bash
# The nginx front (docs/security.md) runs Debian's nginx binary. Install it with apt when missing, and leave no
# system nginx running: the project starts its own, with the config `mar-builder deploy nginx` writes.
set -euo pipefail
if command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]]; then
  exit 0
fi
if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "nginx not found; installing Debian's nginx with apt-get (not started: the tests start their own)" >&2
  # Debian's postinst starts nginx on port 80 through invoke-rc.d; a policy-rc.d answering 101 ("action
  # forbidden") stops that. Only one we create is removed afterwards.
  policy=/usr/sbin/policy-rc.d
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  had_pid_file=$([[ -e /run/nginx.pid ]] && echo yes || echo no)
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
  # An existing policy-rc.d may have let the postinst start it anyway: stop the nginx this install started.
  if [[ "$had_pid_file" == no && -s /run/nginx.pid ]]; then
    /usr/sbin/nginx -s quit || true
  fi
  exit 0
fi
echo "error: the nginx front needs nginx (Debian's package gets security fixes). Install it, e.g.:" >&2
echo "  sudo apt-get install nginx && sudo systemctl disable --now nginx" >&2
exit 1
