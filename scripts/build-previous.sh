#!/usr/bin/env bash
# Builds the previous release's keepup (the commit in packaging/previous-release)
# into target/previous/keepup, for the rolling-upgrade lab test
# (crates/keepup/tests/upgrade.rs): version N running beside version N+1.
# Kept between runs; rebuilt only when the pinned commit changes.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=$(tr -d '[:space:]' < packaging/previous-release)
out=target/previous
if [ -x "$out/keepup" ] && [ "$(cat "$out/rev" 2>/dev/null)" = "$rev" ]; then
  echo "$PWD/$out/keepup"
  exit 0
fi
if ! git cat-file -e "$rev^{commit}" 2>/dev/null; then
  echo "build-previous: commit $rev is not in this clone (a shallow clone? git fetch --unshallow)" >&2
  exit 1
fi
rm -rf "$out/src"
mkdir -p "$out/src"
git archive "$rev" | tar -x -C "$out/src"
cargo build -q -p keepup --manifest-path "$out/src/Cargo.toml" --target-dir "$out/target" >&2
cp "$out/target/debug/keepup" "$out/keepup"
echo "$rev" > "$out/rev"
echo "$PWD/$out/keepup"
