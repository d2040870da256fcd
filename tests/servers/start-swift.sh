#!/usr/bin/env bash
# start-swift.sh DIR PORT
# Throwaway all-in-one OpenStack Swift (Debian 12 packages, Swift 2.30) on
# 127.0.0.1 with the S3 API (s3api + tempauth in the proxy pipeline).
#   PORT    proxy (S3 + Swift API)      PORT+1  account server
#   PORT+2  container server            PORT+3  object server
#   PORT+4  memcached (tempauth needs the 'cache' filter; see NOTES.md)
# Rings (1 replica, 1 device each), configs, storage and logs all live in DIR/swift.
# Appends "name pid" lines to DIR/pids and prints endpoint + S3 credentials.
# Env: S3_ACCOUNT (berth) S3_USER (admin) S3_SECRET (berth-secret) SWIFT_WAIT (60 s)
#      SWIFT_MEMCACHED (1; 0 = don't start memcached: S3 still works, see NOTES.md)
#      SWIFT_RINGS (python = default: rings from one python3 process with Swift's
#      RingBuilder API, ~0.5 s; cli = the same rings by 9 swift-ring-builder
#      calls, ~6 s)
# NB: /etc/swift/swift.conf (hash prefix/suffix + storage policy 0) is read from
# that fixed path by every Swift server; the package ships a usable one.
set -euo pipefail

DIR=${1:?usage: start-swift.sh DIR PORT}
PORT=${2:?usage: start-swift.sh DIR PORT}
S3_ACCOUNT=${S3_ACCOUNT:-berth}
S3_USER=${S3_USER:-admin}
S3_SECRET=${S3_SECRET:-berth-secret}
SWIFT_WAIT=${SWIFT_WAIT:-60}
SWIFT_MEMCACHED=${SWIFT_MEMCACHED:-1}
SWIFT_RINGS=${SWIFT_RINGS:-python}
# eventlet's green DNS resolver (dnspython) costs ~0.6 s of imports in every Swift
# process; everything here is a literal IP, so skip it (halves each start-up).
export EVENTLET_NO_GREENDNS=yes
ACC_PORT=$((PORT + 1)); CON_PORT=$((PORT + 2)); OBJ_PORT=$((PORT + 3)); MC_PORT=$((PORT + 4))

for b in swift-proxy-server swift-account-server swift-container-server swift-object-server swift-ring-builder; do
  command -v "$b" >/dev/null || { echo "$b missing: apt-get install -y swift-proxy swift-account swift-container swift-object" >&2; exit 1; }
done
[ -f /etc/swift/swift.conf ] || { echo "/etc/swift/swift.conf missing (shipped by package 'swift')" >&2; exit 1; }
if [ "$SWIFT_MEMCACHED" = 1 ]; then
  command -v memcached >/dev/null || { echo "memcached missing: apt-get install -y memcached" >&2; exit 1; }
  ports="$PORT $ACC_PORT $CON_PORT $OBJ_PORT $MC_PORT"
else
  ports="$PORT $ACC_PORT $CON_PORT $OBJ_PORT"
fi
for p in $ports; do
  if ss -Hltn "sport = :$p" | grep -q .; then echo "port $p already in use" >&2; exit 1; fi
done

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
S="$DIR/swift"
[ -e "$S" ] && { echo "$S already exists: use a fresh DIR" >&2; exit 1; }
mkdir -p "$S/etc" "$S/srv/d1" "$S/log" "$S/run"

# Swift keeps object metadata in user xattrs: fail early if the filesystem lacks them.
python3 -c 'import os,sys; p=sys.argv[1]+"/.xattr-probe"; open(p,"w").close(); os.setxattr(p,"user.swift.probe",b"1"); os.remove(p)' "$S/srv/d1" \
  || { echo "filesystem of $S/srv does not support user xattrs" >&2; exit 1; }

# If start-up fails (or is interrupted), stop what this script started.
started=()
ok=0
trap '[ "$ok" = 1 ] || { [ ${#started[@]} -eq 0 ] || kill -TERM "${started[@]}" 2>/dev/null; echo "start-swift.sh failed: stopped the processes it started" >&2; }' EXIT

t0=$(date +%s.%N)

# ---- rings: 1 replica, 1 device (d1) per ring; part power 8 keeps rebalance fast
build_rings_cli() {
  cd "$S/etc"
  for r in account:$ACC_PORT container:$CON_PORT object:$OBJ_PORT; do
    name=${r%%:*}; port=${r##*:}
    swift-ring-builder "$name.builder" create 8 1 1      # 2^8 partitions, 1 replica, min_part_hours 1
    swift-ring-builder "$name.builder" add "r1z1-127.0.0.1:$port/d1" 100
    swift-ring-builder "$name.builder" rebalance
  done
}
build_rings_python() {  # same result (.builder + .ring.gz), one interpreter start
  /usr/bin/python3 - "$S/etc" "$ACC_PORT" "$CON_PORT" "$OBJ_PORT" <<'PY'
import sys
from swift.common.ring import RingBuilder
etc, ports = sys.argv[1], dict(zip(("account", "container", "object"), map(int, sys.argv[2:5])))
for name, port in ports.items():
    b = RingBuilder(8, 1, 1)
    b.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1", "port": port, "device": "d1",
               "weight": 100, "meta": "", "replication_ip": "127.0.0.1", "replication_port": port})
    b.rebalance()
    b.get_ring().save(f"{etc}/{name}.ring.gz")
    b.save(f"{etc}/{name}.builder")
    print(name, "ring written")
PY
}
( "build_rings_$SWIFT_RINGS" ) >"$S/log/rings.log" 2>&1 \
  || { echo "ring build failed, see $S/log/rings.log" >&2; tail -5 "$S/log/rings.log" >&2; exit 1; }
t1=$(date +%s.%N)

# ---- configs
# Common: loopback, run as root (no privilege drop, so no chown of DIR needed),
# workers = 0 (one process, no forking: the recorded PID is the whole server),
# syslog to a UDP port on loopback nobody listens on (no /dev/log here), real logs
# go to stderr via -v and are redirected into $S/log.
common() {
  cat <<EOF
[DEFAULT]
bind_ip = 127.0.0.1
bind_port = $1
workers = 0
user = root
swift_dir = $S/etc
devices = $S/srv
mount_check = false
disable_fallocate = true
log_udp_host = 127.0.0.1
log_udp_port = 9
log_level = INFO
EOF
}
for kind in account container object; do
  case $kind in account) p=$ACC_PORT ;; container) p=$CON_PORT ;; object) p=$OBJ_PORT ;; esac
  { common "$p"
    cat <<EOF

[pipeline:main]
pipeline = $kind-server

[app:$kind-server]
use = egg:swift#$kind
EOF
  } >"$S/etc/$kind-server.conf"
done
{ common "$PORT"
  cat <<EOF

[pipeline:main]
# s3api must come before tempauth; slo is needed for S3 multipart uploads and
# copy for S3 CopyObject / UploadPartCopy. catch_errors, gatekeeper,
# listing_formats, copy, dlo and versioned_writes are "required": the proxy
# inserts them itself (with a log line) when missing.
pipeline = catch_errors gatekeeper healthcheck proxy-logging cache listing_formats s3api tempauth copy slo dlo versioned_writes proxy-logging proxy-server

[app:proxy-server]
use = egg:swift#proxy
# tempauth users' accounts must be created on first use
account_autocreate = true

[filter:tempauth]
use = egg:swift#tempauth
# S3 access key = "$S3_ACCOUNT:$S3_USER", secret = "$S3_SECRET"
user_${S3_ACCOUNT}_${S3_USER} = $S3_SECRET .admin

[filter:s3api]
use = egg:swift#s3api
location = us-east-1

[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$MC_PORT

[filter:catch_errors]
use = egg:swift#catch_errors
[filter:gatekeeper]
use = egg:swift#gatekeeper
[filter:healthcheck]
use = egg:swift#healthcheck
[filter:proxy-logging]
use = egg:swift#proxy_logging
[filter:listing_formats]
use = egg:swift#listing_formats
[filter:copy]
use = egg:swift#copy
[filter:slo]
use = egg:swift#slo
[filter:dlo]
use = egg:swift#dlo
[filter:versioned_writes]
use = egg:swift#versioned_writes
EOF
} >"$S/etc/proxy-server.conf"

# ---- start (each one process; PIDs appended as they start)
if [ "$SWIFT_MEMCACHED" = 1 ]; then
  # -u root: memcached refuses to run as root without it
  memcached -u root -l 127.0.0.1 -p "$MC_PORT" -U 0 -m 64 </dev/null >"$S/log/memcached.log" 2>&1 &
  echo "memcached $!" >>"$DIR/pids"; started+=($!)
fi
for kind in account container object proxy; do
  "swift-$kind-server" "$S/etc/$kind-server.conf" -v </dev/null >"$S/log/$kind.log" 2>&1 &
  echo "swift-$kind-server $!" >>"$DIR/pids"; started+=($!)
done

# ---- wait (bounded) until every server answers HTTP and the proxy speaks S3
deadline=$(( $(date +%s) + SWIFT_WAIT ))
ready() {
  local p code
  for p in $ACC_PORT $CON_PORT $OBJ_PORT; do
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$p/") || return 1
    [ "$code" != 000 ] || return 1
  done
  [ "$(curl -s -m 2 "http://127.0.0.1:$PORT/healthcheck")" = OK ] || return 1
  # an S3-signed-looking request with a bogus signature must get an S3 XML error from s3api
  curl -s -m 2 -H 'Authorization: AWS probe:probe' "http://127.0.0.1:$PORT/" | grep -q '<Code>' || return 1
}
until ready; do
  for pid in "${started[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "pid $pid exited during start-up; logs in $S/log:" >&2
      tail -n 20 "$S/log/"*.log >&2; exit 1
    fi
  done
  if [ "$(date +%s)" -ge "$deadline" ]; then echo "swift not ready after ${SWIFT_WAIT}s; logs in $S/log" >&2; exit 1; fi
  sleep 0.1
done
t2=$(date +%s.%N)
ok=1
awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN { printf "timing: rings %.2fs, servers ready %.2fs, total %.2fs\n", b-a, c-b, c-a }' >&2

cat <<EOF
S3_ENDPOINT=http://127.0.0.1:$PORT
S3_REGION=us-east-1
S3_ACCESS_KEY=$S3_ACCOUNT:$S3_USER
S3_SECRET_KEY=$S3_SECRET
SWIFT_AUTH_URL=http://127.0.0.1:$PORT/auth/v1.0
SWIFT_LOGS=$S/log
EOF
