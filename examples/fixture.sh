#!/usr/bin/env bash
# A private registry for a shell test: started on a free port with known
# images, stopped (its data removed) however the script ends.
set -euo pipefail
coproc BERTH { exec "${BERTH:-berth}" serve --ephemeral --listen 127.0.0.1:0 \
    --ready-json --exit-with-parent --preload "${LAYOUT:-fixtures/layouts/app}"; }
pid=$BERTH_PID  # bash unsets BERTH_PID once the coprocess ends
trap 'kill "$pid" 2>/dev/null; wait "$pid" || true' EXIT
read -r ready <&"${BERTH[0]}"
url=$(sed -E 's/.*"url":"([^"]*)".*/\1/' <<<"$ready")

curl -fsS "$url/v2/fixtures/app/tags/list"
