#!/usr/bin/env bash
# A private registry for a shell test: started on a free port with known
# images, stopped (its data removed) however the script ends.
set -euo pipefail
coproc BERTH { exec "${BERTH:-berth}" serve --ephemeral --listen 127.0.0.1:0 \
    --ready-json --preload "${LAYOUT:-fixtures/layouts/app}"; }
read -r ready <&"${BERTH[0]}"
url=$(sed -E 's/.*"url":"([^"]*)".*/\1/' <<<"$ready")
trap 'kill "$BERTH_PID"; wait "$BERTH_PID" || true' EXIT

curl -fsS "$url/v2/fixtures/app/tags/list"
