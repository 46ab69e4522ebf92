#!/usr/bin/env bash
# The edge's tests (tests/integration/test_edge.py) run a real nginx with deploy/k8s/base/edge/nginx.conf.
# Installs Debian's nginx-light when no nginx is installed, without starting the system's own
# nginx service (a policy-rc.d for the install's duration): the tests start theirs on loopback.
set -euo pipefail
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo -n"
fi
if ! command -v apt-get >/dev/null; then
  echo "nginx is needed by the edge's tests and there is no apt-get here: install nginx (1.22+)" >&2
  exit 1
fi
echo "== installing Debian's nginx-light (the edge's tests)"
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  trap '$sudo rm -f "$policy"' EXIT  # taken away whether or not the install succeeds
fi
install() { DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q nginx-light >/dev/null; }
install || { $sudo apt-get update -q >/dev/null && install; }
