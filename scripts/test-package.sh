#!/usr/bin/env bash
# Tests the Debian package as an operator meets it (issue #11): builds it,
# unpacks it into a fresh directory tree (dpkg -x) and checks the binary,
# the man pages, the completions, the unit (systemd-analyze verify), the
# maintainer scripts and `keepup init`. Run by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "test-package: FAILED: $*" >&2; exit 1; }
# Every check reads a command's whole output first: `cmd | grep -q` under
# pipefail fails at random when grep exits early and cmd dies of SIGPIPE
# (seen as "FAILED: control file" in CI, 14 of 300 runs here).
out_of() { "$@" 2>/dev/null || true; }
deb=$(./scripts/package.sh | tail -1)
[ -f "$deb" ] || fail "no package at $deb"
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
info=$(dpkg-deb --info "$deb" 2>&1) || fail "dpkg-deb --info: $info"
grep -q "Package: keepup" <<<"$info" || fail "control file: $info"
dpkg -x "$deb" "$root"
bin="$root/usr/bin/keepup"

# The binary: the workspace's version, stripped, no demo or lab helpers.
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
grep -qx "keepup $version" <<<"$(out_of "$bin" --version)" || fail "keepup --version: $("$bin" --version)"
if grep -qE '\.symtab|\.debug_' <<<"$(readelf -S "$bin")"; then fail "binary is not stripped"; fi
if grep -qE '^  (demo|internal) ' <<<"$(out_of "$bin" --help)"; then fail "demo or lab helpers in the packaged binary"; fi
if "$bin" internal web --help >/dev/null 2>&1; then fail "'keepup internal' answers in the packaged binary"; fi
size=$(stat -c %s "$bin")
echo "test-package: binary $((size / 1024 / 1024)) MiB stripped"

# Man pages made from the CLI: the main one and one per subcommand.
for page in keepup keepup-run keepup-init keepup-status keepup-check-config keepup-db-switchover; do
  f="$root/usr/share/man/man1/$page.1.gz"
  [ -f "$f" ] || fail "no man page $page"
  grep -q "$page" <<<"$(MANPAGER=cat MANWIDTH=80 out_of man -l "$f")" || fail "man -l $page renders nothing"
done
grep -q -- "--host" <<<"$(MANPAGER=cat out_of man -l "$root/usr/share/man/man1/keepup-init.1.gz")" ||
  fail "keepup-init(1) lacks --host"

# Completions: bash loads and completes subcommands; zsh and fish are there.
bash -c "source '$root/usr/share/bash-completion/completions/keepup' && complete -p keepup" >/dev/null ||
  fail "bash completion does not load"
words=$(bash -c "source '$root/usr/share/bash-completion/completions/keepup'
  COMP_WORDS=(keepup st); COMP_CWORD=1; COMP_LINE='keepup st'; COMP_POINT=9
  _keepup keepup st keepup; echo \"\${COMPREPLY[*]}\"")
grep -qw status <<<"$words" || fail "bash completion of 'keepup st' gave: $words"
[ -s "$root/usr/share/zsh/vendor-completions/_keepup" ] || fail "no zsh completion"
[ -s "$root/usr/share/fish/vendor_completions.d/keepup.fish" ] || fail "no fish completion"

# The unit: systemd parses it, pointed at the binary in the tree (the man
# pages it names were checked above: verify would look in this host's).
unit="$root/lib/systemd/system/keepup.service"
grep -q '^Type=notify' "$unit" || fail "unit is not Type=notify"
grep -q '^WatchdogSec=' "$unit" || fail "unit has no watchdog"
mkdir -p "$root/verify"
sed "s#/usr/bin/keepup#$root/usr/bin/keepup#g" "$unit" > "$root/verify/keepup.service"
out=$(systemd-analyze verify --man=no "$root/verify/keepup.service" 2>&1) ||
  fail "systemd-analyze verify: $out"
warnings=$(grep -i "keepup.service" <<<"$out" || true)
if [ -n "$warnings" ]; then
  echo "$warnings" >&2
  fail "systemd-analyze verify warns about the unit"
fi

# Maintainer scripts are valid sh; the example config is the schema's.
for s in postinst prerm postrm; do sh -n "packaging/debian/$s" || fail "$s syntax"; done
cmp -s "$root/etc/keepup/keepup.toml.example" <("$bin" config --example) || fail "example config differs"

# keepup init writes a cluster that passes check-config, and never overwrites.
etc="$root/etc/keepup"
"$bin" init --dir "$etc" --cluster shop --host lb-1=10.0.0.1 --host lb-2=10.0.0.2 \
  --witness backup=10.0.0.9 --vip 10.0.0.100/24 --backend web-1=10.0.0.11:80 >/dev/null
[ "$(stat -c %a "$etc/key")" = 600 ] || fail "key mode $(stat -c %a "$etc/key")"
[ "$(stat -c %s "$etc/key")" = 32 ] || fail "key size"
grep -q "OK (3 nodes, 1 groups" <<<"$(out_of "$bin" -c "$etc/keepup.toml" check-config)" || fail "init's config does not pass check-config"
grep -qE '^[0-9a-f]{64}$' <<<"$(out_of "$bin" -c "$etc/keepup.toml" api-token --read-only)" || fail "api-token"
before=$(sha256sum "$etc/key")
if "$bin" init --dir "$etc" --host a=10.0.0.1 2>/dev/null; then fail "init overwrote"; fi
[ "$before" = "$(sha256sum "$etc/key")" ] || fail "init changed the key"
echo "test-package: OK ($deb, $(stat -c %s "$deb") bytes)"
