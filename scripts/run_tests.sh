#!/usr/bin/env bash
# The test suite, as `make test` runs it.
#
# Tests marked `wallclock` wait minutes for real calendar time (cron minute slots) while the
# machine idles, so they run in a second pytest process beside the others instead of after them;
# both runs must pass.  With arguments (paths, -k, -m, ...), one pytest runs what they select.
set -uo pipefail
PY=${PY:-.venv/bin/python}
if (($#)); then
    exec "$PY" -m pytest "$@"
fi

side_log=$(mktemp "${TMPDIR:-/tmp}/remora-wallclock.XXXXXX")
"$PY" -m pytest -m wallclock -p no:cacheprovider >"$side_log" 2>&1 &
side=$!
# A background job of a script does not get the terminal's Ctrl-C: pass it on.
trap 'kill -INT "$side" 2>/dev/null; wait "$side"; rm -f "$side_log"; exit 130' INT TERM

"$PY" -m pytest -m "not wallclock"
main_rc=$?
wait "$side"
side_rc=$?
trap - INT TERM
echo
echo "==== tests marked wallclock (run beside the others; exit status $side_rc) ===="
cat "$side_log"
rm -f "$side_log"
# 5: nothing selected (no test marked wallclock) is not a failure
((side_rc == 5)) && side_rc=0
((main_rc != 0)) && exit "$main_rc"
exit "$side_rc"
