#!/bin/bash
# The daemon's peak RSS during an import (README, "Backups and moving data"): starts
# `prefsd serve` on an empty store in a new directory, imports FILE with `prefsd import`,
# samples the daemon's VmRSS every 0.2 s into DIR/rss.log and prints its VmHWM, the time
# and the rate.
#
# usage: tests/benches/import-rss.sh PREFSD CONFIG_DIR FILE DIR
set -u
BIN=$1; CONFIG=$2; FILE=$3; D=$4
rm -rf "$D"; mkdir -p "$D"
"$BIN" --config "$CONFIG" --socket "$D/s.sock" serve --database "$D/i.db" > "$D/serve.log" 2>&1 &
PID=$!
for _ in $(seq 300); do [ -S "$D/s.sock" ] && break; sleep 0.1; done
( while kill -0 $PID 2>/dev/null; do
    echo "$(date +%s.%N | cut -c1-14) $(awk '/VmRSS/ {print $2}' /proc/$PID/status 2>/dev/null)"
    sleep 0.2
  done ) > "$D/rss.log" &
SAMPLER=$!
START=$(date +%s.%N)
"$BIN" --socket "$D/s.sock" --timeout 30m import "$FILE" > "$D/import.out" 2> "$D/import.err"
RC=$?
END=$(date +%s.%N)
HWM=$(awk '/VmHWM/ {print $2}' /proc/$PID/status)
kill $PID; wait $PID 2>/dev/null; kill $SAMPLER 2>/dev/null
LINES=$(wc -l < "$FILE")
echo "import exit $RC; daemon VmHWM $HWM KiB; $(echo "$END - $START" | bc) s; $(echo "$LINES / ($END - $START)" | bc) lines/s"
