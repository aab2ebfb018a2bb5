#!/usr/bin/env bash
# Drives a running prefsd through Knock's official SDKs (rest.md §1): installs the pinned
# knockapi in a virtual environment and @knocklabs/node, @knocklabs/client and undici with
# npm into SDK_DIR (a fresh temporary directory unless given; the test reuses one under
# target/), then runs the three drivers beside this script.
#
# Env: PREFSD_SOCKET (the daemon's socket), PREFSD_TCP_URL (http://127.0.0.1:PORT of its
# REST TCP listener), KNOCK_API_KEY (a secret key), PREFSD_USER_TOKEN and PREFSD_TOKEN_USER
# (a user token from `prefsd token` and its user), SDK_DIR (optional).
set -euo pipefail

KNOCKAPI=1.33.0
KNOCK_NODE=1.35.0
KNOCK_CLIENT=0.22.2
UNDICI=6

here=$(cd "$(dirname "$0")" && pwd)
dir=${SDK_DIR:-$(mktemp -d)}
mkdir -p "$dir"
stamp="$dir/installed-$KNOCKAPI-$KNOCK_NODE-$KNOCK_CLIENT-$UNDICI"
if [ ! -f "$stamp" ]; then
  rm -rf "$dir/venv" "$dir/node"
  python3 -m venv "$dir/venv"
  "$dir/venv/bin/pip" install --quiet --disable-pip-version-check "knockapi==$KNOCKAPI"
  mkdir -p "$dir/node"
  (cd "$dir/node" && npm init -y >/dev/null &&
    npm install --silent --no-audit --no-fund \
      "@knocklabs/node@$KNOCK_NODE" "@knocklabs/client@$KNOCK_CLIENT" "undici@$UNDICI")
  touch "$stamp"
fi

"$dir/venv/bin/python" "$here/knock_py.py"
export NODE_PATH="$dir/node/node_modules"
node "$here/knock_node.cjs"
node "$here/knock_client.cjs"
