#!/usr/bin/env bash
# start-postgres.sh DIR PORT
# Throwaway PostgreSQL 15 (Debian package postgresql-15) on 127.0.0.1:PORT,
# data + unix socket + log under DIR/pg, started directly (no systemd, no
# pg_ctlcluster), as the 'postgres' OS user (initdb/postgres refuse root).
# Appends "postgres <pid>" to DIR/pids and prints the connection URL.
# Env: PG_USER (berth) PG_PASSWORD (berth) PG_DB (berth) PG_WAIT (60 s)
#      PG_TLS_CERT, PG_TLS_KEY (PEM files: serve TLS with them too)
set -euo pipefail

DIR=${1:?usage: start-postgres.sh DIR PORT}
PORT=${2:?usage: start-postgres.sh DIR PORT}
PG_USER=${PG_USER:-berth}
PG_PASSWORD=${PG_PASSWORD:-berth}
PG_DB=${PG_DB:-berth}
PG_WAIT=${PG_WAIT:-60}
PGBIN=/usr/lib/postgresql/15/bin   # not on PATH in Debian (only wrappers are)
RUNAS=(setpriv --reuid=postgres --regid=postgres --clear-groups --)  # execs: $! is postgres itself

[ -x "$PGBIN/postgres" ] || { echo "postgresql-15 not installed (apt-get install -y postgresql-15)" >&2; exit 1; }
id postgres >/dev/null 2>&1 || { echo "no 'postgres' user (created by postgresql-common)" >&2; exit 1; }
if ss -Hltn "sport = :$PORT" | grep -q .; then echo "port $PORT already in use" >&2; exit 1; fi

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
# mktemp -d makes DIR 0700 root: the postgres user must be able to traverse it.
chmod o+x "$DIR"
PG="$DIR/pg"
[ -e "$PG" ] && { echo "$PG already exists: use a fresh DIR" >&2; exit 1; }
mkdir -p "$PG/sock"
chown -R postgres:postgres "$PG"

t0=$(date +%s.%N)
# -N (--no-sync): skip fsync of the new cluster, ~2x faster initdb; fine for a throwaway DB.
# local (unix socket) = trust for bootstrap; TCP = scram-sha-256 with a password.
"${RUNAS[@]}" "$PGBIN/initdb" -D "$PG/data" -U postgres -E UTF8 --locale=C -N \
    --auth-local=trust --auth-host=scram-sha-256 >"$PG/initdb.log" 2>&1 \
  || { echo "initdb failed, see $PG/initdb.log" >&2; tail -5 "$PG/initdb.log" >&2; exit 1; }
t1=$(date +%s.%N)

# PG_TLS_CERT and PG_TLS_KEY (PEM files): serve TLS with them too.
TLS=()
if [ -n "${PG_TLS_CERT:-}" ]; then
  install -o postgres -g postgres -m 0600 "$PG_TLS_CERT" "$PG/data/server.crt"
  install -o postgres -g postgres -m 0600 "${PG_TLS_KEY:?PG_TLS_KEY goes with PG_TLS_CERT}" "$PG/data/server.key"
  TLS=(-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key)
fi

# Durability off: test-only server. Remove the -c fsync/synchronous_commit/full_page_writes for a real one.
"${RUNAS[@]}" "$PGBIN/postgres" -D "$PG/data" \
    -c listen_addresses=127.0.0.1 -p "$PORT" -c unix_socket_directories="$PG/sock" \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off "${TLS[@]}" \
    </dev/null >"$PG/postgres.log" 2>&1 &
PID=$!
echo "postgres $PID" >>"$DIR/pids"
# If start-up fails (or is interrupted), stop the server this script started.
# TERM first: a '&' job of a non-interactive shell starts with SIGINT ignored, so
# an INT sent before postgres has installed its handlers is lost; TERM is not.
ok=0
trap '[ "$ok" = 1 ] || { kill -TERM "$PID" 2>/dev/null; kill -INT "$PID" 2>/dev/null; echo "start-postgres.sh failed: stopped postgres $PID" >&2; }' EXIT

deadline=$(( $(date +%s) + PG_WAIT ))
until "$PGBIN/pg_isready" -q -h "$PG/sock" -p "$PORT" -U postgres; do
  if ! kill -0 "$PID" 2>/dev/null; then echo "postgres exited, see $PG/postgres.log" >&2; tail -5 "$PG/postgres.log" >&2; exit 1; fi
  if [ "$(date +%s)" -ge "$deadline" ]; then echo "postgres not ready after ${PG_WAIT}s" >&2; exit 1; fi
  sleep 0.1
done
t2=$(date +%s.%N)

# Create role + database over the unix socket (trust), as the postgres OS user.
"${RUNAS[@]}" "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG/sock" -p "$PORT" -U postgres -d postgres \
  -v u="$PG_USER" -v p="$PG_PASSWORD" -v d="$PG_DB" >/dev/null <<'SQL'
CREATE ROLE :"u" LOGIN PASSWORD :'p';
CREATE DATABASE :"d" OWNER :"u";
SQL

URL="postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PORT/$PG_DB"
# Prove the TCP + password path works (what a client will use).
psql -X -q -t -A "$URL" -c 'select 1' >/dev/null
t3=$(date +%s.%N)
ok=1

awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" 'BEGIN { printf "timing: initdb %.2fs, postgres ready %.2fs, role+db+check %.2fs, total %.2fs\n", b-a, c-b, d-c, d-a }' >&2
echo "postgres pid $PID, log $PG/postgres.log, socket dir $PG/sock"
echo "DATABASE_URL=$URL"
