#!/usr/bin/env bash
# e2e.sh [RUNS] [PG_PORT] [SWIFT_PORT]
# RUNS times: fresh mktemp dir -> start-postgres.sh + start-swift.sh into it ->
# psql over the URL -> verify-s3.py -> stop.sh --rm -> check nothing is left
# (no process, no listening port, no dir). Prints wall-clock start times.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
RUNS=${1:-3}; PG_PORT=${2:-55432}; SW_PORT=${3:-58080}
PY=${PYTHON:-python3}   # needs boto3 (this machine's pyenv python3 has it)

now() { date +%s.%N; }
for i in $(seq 1 "$RUNS"); do
  D=$(mktemp -d /tmp/berth-cluster.XXXXXX)
  echo "=== run $i in $D"
  t0=$(now)
  pg_out=$("$HERE/start-postgres.sh" "$D" "$PG_PORT")
  t1=$(now)
  sw_out=$("$HERE/start-swift.sh" "$D" "$SW_PORT")
  t2=$(now)
  awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "wall: start-postgres.sh %.2fs, start-swift.sh %.2fs\n", b-a, c-b }'
  url=$(sed -n 's/^DATABASE_URL=//p' <<<"$pg_out")
  psql -X -q -v ON_ERROR_STOP=1 "$url" -c 'create table t(id int primary key, v text)' \
       -c "insert into t values (1, 'x')" -t -A -c 'select current_user, count(*) from t'
  eval "$(grep -E '^S3_(ENDPOINT|ACCESS_KEY|SECRET_KEY)=' <<<"$sw_out")"
  "$PY" "$HERE/verify-s3.py" "$S3_ENDPOINT" "$S3_ACCESS_KEY" "$S3_SECRET_KEY" | tail -n 1
  pids=$(awk '{print $2}' "$D/pids")
  "$HERE/stop.sh" "$D" --rm >/dev/null
  for p in $pids; do
    if [ -e "/proc/$p" ] && [ "$(awk '{print $3}' "/proc/$p/stat")" != Z ]; then echo "LEFT: pid $p"; exit 1; fi
  done
  for p in "$PG_PORT" "$SW_PORT" $((SW_PORT+1)) $((SW_PORT+2)) $((SW_PORT+3)) $((SW_PORT+4)); do
    if ss -Hltn "sport = :$p" | grep -q .; then echo "LEFT: port $p listening"; exit 1; fi
  done
  [ ! -e "$D" ] || { echo "LEFT: $D"; exit 1; }
  echo "stopped: no process, port or dir left"
done
