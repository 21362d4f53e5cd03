#!/usr/bin/env bash
# apt_install.sh PKG...: install these Debian/Ubuntu packages (as root, or through sudo);
# without either, say which are missing and go on (the tests or benchmarks then say what they lack).
set -euo pipefail
[ $# -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "missing system packages: $* (run as root or install them)" >&2; exit 0; fi
else SUDO=""; fi
echo "installing: $*" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
