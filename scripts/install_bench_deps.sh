#!/usr/bin/env bash
# Install the system packages the benchmarks compare with when they are missing (Debian/Ubuntu):
# beanstalkd (scripts/bench_queue.py --compare-beanstalkd auto).
set -euo pipefail
need=()
command -v beanstalkd >/dev/null 2>&1 || [ -x /usr/bin/beanstalkd ] || need+=(beanstalkd)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
    echo "missing system packages: ${need[*]} (run as root or install them)" >&2; exit 0; fi
else SUDO=""; fi
echo "installing: ${need[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# the package's own service is not wanted: the benchmark starts its own beanstalkd on a free port
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then $SUDO systemctl disable --now beanstalkd >/dev/null 2>&1 || true; fi
