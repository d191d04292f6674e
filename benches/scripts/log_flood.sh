#!/usr/bin/env bash
# Log flood cost of the real agent: appends RATE sshd lines per second to a followed file for
# SECS seconds and prints the agent's CPU (utime + stime from /proc/<pid>/stat) over that time,
# its peak RSS, and the analysed / dropped line counts of its reports.
#
#   cargo build --release -p edgewarden --bin edgewarden
#   bash benches/scripts/log_flood.sh target/release/edgewarden 100000 20
set -euo pipefail
BIN=${1:?agent binary}; RATE=${2:-100000}; SECS=${3:-20}
D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
: > "$D/flood.log"
cat > "$D/agent.toml" <<EOT
thing_name = "flood"
state_dir = "$D/state"
[logs]
enabled = true
journal = false
files = ["$D/flood.log"]
EOT
"$BIN" run --config "$D/agent.toml" >/dev/null 2>&1 &
PID=$!
sleep 2
cpu() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
C0=$(cpu); T0=$(date +%s.%N)
python3 - "$D/flood.log" "$RATE" "$SECS" <<'PY'
import sys, time
path, rate, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
batch = max(rate // 10, 1)
with open(path, 'ab', buffering=0) as f:
    t0 = time.time(); n = 0
    while time.time() - t0 < secs:
        f.write(b''.join(
            b'Mar  1 10:00:%02d gw sshd[%d]: Failed password for invalid user u%d from 198.51.%d.%d port %d ssh2\n'
            % (k % 60, 1000 + k % 5000, k, (k >> 8) % 256, k % 256, 1024 + k % 60000)
            for k in range(n, n + batch)))
        n += batch
        d = t0 + n / rate - time.time()
        if d > 0:
            time.sleep(d)
print(f'{n} lines in {time.time() - t0:.1f} s')
PY
sleep 1.5
C1=$(cpu); T1=$(date +%s.%N)
grep -E 'VmHWM|VmRSS' "/proc/$PID/status"
kill -TERM "$PID"; wait "$PID" || true
TICKS=$(getconf CLK_TCK)
python3 -c "print(f'CPU {($C1 - $C0) / $TICKS / ($T1 - $T0) * 100:.1f} % of one core over {$T1 - $T0:.1f} s')"
grep -oE '"(auth_failures|log_lines_dropped)":\[\{"number":[0-9.]+\}\]' "$D/state/outbox/reports.jsonl" || true
