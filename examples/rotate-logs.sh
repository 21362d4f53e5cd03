#!/bin/bash
# Compress logs older than a day and keep the newest N archives (--keep N).
set -euo pipefail
keep=7
if [ "${1:-}" = "--keep" ]; then keep="${2:-7}"; fi
dir="${LOG_DIR:-/var/log/myapp}"
[ -d "$dir" ] || { echo "no $dir; nothing to rotate"; exit 0; }
find "$dir" -name '*.log' -mtime +1 -exec gzip -f {} +
ls -1t "$dir"/*.gz 2>/dev/null | tail -n "+$((keep + 1))" | xargs -r rm -f
echo "rotated logs in $dir (kept $keep archives)"
