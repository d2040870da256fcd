#!/usr/bin/env bash
# stop.sh DIR [--rm]
# Stops every process recorded in DIR/pids ("name pid" per line), newest first,
# only by those PIDs. Everything gets SIGTERM; postgres then also SIGINT (TERM
# alone = "smart" shutdown, which waits for clients to disconnect; INT upgrades
# it to "fast"). SIGKILL after STOP_WAIT (15 s).
# A PID is only signalled if /proc/PID/cmdline still matches its name (guards
# against PID reuse). With --rm, DIR is deleted afterwards.
set -uo pipefail

DIR=${1:?usage: stop.sh DIR [--rm]}
STOP_WAIT=${STOP_WAIT:-15}
[ -f "$DIR/pids" ] || { echo "no $DIR/pids" >&2; [ "${2:-}" = --rm ] && rm -rf "$DIR"; exit 0; }

matches() { # pid name -> is this PID still the process we started?
  local cmd
  cmd=$( { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null ) || return 1
  case "$2" in
    postgres)  [[ $cmd == *postgres* ]] ;;
    memcached) [[ $cmd == *memcached* ]] ;;
    swift-*)   [[ $cmd == *"$2"* ]] ;;
    *)         [ -n "$cmd" ] ;;
  esac
}

live=()
while read -r name pid; do
  [ -n "${pid:-}" ] || continue
  if matches "$pid" "$name"; then
    if kill -TERM "$pid" 2>/dev/null; then
      [ "$name" = postgres ] && kill -INT "$pid" 2>/dev/null
      live+=("$pid"); echo "stopping $name ($pid)"
    fi
  fi
done < <(tac "$DIR/pids")

deadline=$(( $(date +%s) + STOP_WAIT ))
for pid in "${live[@]}"; do
  while kill -0 "$pid" 2>/dev/null; do
    # a zombie (exited, parent hasn't reaped it) counts as stopped
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && break
    if [ "$(date +%s)" -ge "$deadline" ]; then echo "SIGKILL $pid" >&2; kill -KILL "$pid" 2>/dev/null; break; fi
    sleep 0.1
  done
done
mv "$DIR/pids" "$DIR/pids.stopped"
[ "${2:-}" = --rm ] && rm -rf "$DIR"
exit 0
