#!/usr/bin/env bash
# make demo: installs what is missing, builds and installs the extension, starts the private
# cluster "demo" on port 54315, runs demo/demo.py (concurrent writers), shows the table and the
# conflict statistics with psql, runs demo/cdc_recipe.py (a shuffled CDC stream applied in
# batches, about a second), and leaves the server up to play with.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

name=demo port=${DEMO_PORT:-54315}
scripts/bootstrap.sh
scripts/install.sh
scripts/cluster.sh start "$name" "$port" >/dev/null
eval "$(scripts/cluster.sh env "$name")"

"$VENV/bin/python" demo/demo.py
psql -X -c "SELECT * FROM demo_items ORDER BY id LIMIT 5"
psql -X -c "SELECT * FROM safe_upsert_stats" || echo "demo: (no safe_upsert_stats view yet)"
"$VENV/bin/python" demo/cdc_recipe.py

echo
scripts/cluster.sh status "$name"
echo "  or:      make stop"
