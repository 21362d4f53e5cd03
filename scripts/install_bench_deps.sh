#!/usr/bin/env bash
# Install the system packages the benchmarks compare with when they are missing (Debian/Ubuntu):
# beanstalkd (scripts/bench_queue.py --compare-beanstalkd auto).
set -euo pipefail
need=()
command -v beanstalkd >/dev/null 2>&1 || [ -x /usr/bin/beanstalkd ] || need+=(beanstalkd)
exec bash "$(dirname "$0")/apt_install.sh" ${need[@]+"${need[@]}"}
