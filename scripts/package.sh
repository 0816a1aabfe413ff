#!/usr/bin/env bash
# Builds the Debian package: target/debian/keepup_<version>_amd64.deb.
#   ./scripts/package.sh
# The binary is built with the `deb` profile (release code, stripped) and
# without the `lab` feature, so it carries no demo and no test helpers.
# Man pages and shell completions are generated from the CLI definition.
# Needs: cargo, dpkg-deb, gzip.
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
cargo build --profile deb -p keepup --no-default-features
bin=target/deb/keepup

stage=target/debian/stage
rm -rf "$stage"
mkdir -p "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" \
  "$stage/usr/share/man/man1" "$stage/usr/share/doc/keepup" \
  "$stage/usr/share/bash-completion/completions" \
  "$stage/usr/share/zsh/vendor-completions" \
  "$stage/usr/share/fish/vendor_completions.d" \
  "$stage/etc/keepup"

install -m 0755 "$bin" "$stage/usr/bin/keepup"
install -m 0644 packaging/keepup.service "$stage/lib/systemd/system/keepup.service"
"$bin" config --example > "$stage/etc/keepup/keepup.toml.example"
chmod 0644 "$stage/etc/keepup/keepup.toml.example"

docs=$(mktemp -d)
trap 'rm -rf "$docs"' EXIT
"$bin" docs --out "$docs" >/dev/null
for m in "$docs"/man/*.1; do
  gzip -9n < "$m" > "$stage/usr/share/man/man1/$(basename "$m").gz"
done
install -m 0644 "$docs/completions/keepup.bash" "$stage/usr/share/bash-completion/completions/keepup"
install -m 0644 "$docs/completions/_keepup" "$stage/usr/share/zsh/vendor-completions/_keepup"
install -m 0644 "$docs/completions/keepup.fish" "$stage/usr/share/fish/vendor_completions.d/keepup.fish"

install -m 0644 README.md "$stage/usr/share/doc/keepup/README.md"
cat > "$stage/usr/share/doc/keepup/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: keepup

Files: *
License: $(sed -n 's/^license = "\(.*\)"/\1/p' Cargo.toml | head -1)
COPY
gzip -9n < docs/lifecycle-agent.md > "$stage/usr/share/doc/keepup/lifecycle-agent.md.gz"

for s in postinst prerm postrm; do
  install -m 0755 "packaging/debian/$s" "$stage/DEBIAN/$s"
done
echo "/etc/keepup/keepup.toml.example" > "$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<CONTROL
Package: keepup
Version: $version
Architecture: $arch
Maintainer: keepup developers <keepup@localhost>
Installed-Size: $size
Depends: libc6 (>= 2.34), adduser
Recommends: mariadb-client
Suggests: mariadb-backup
Section: net
Priority: optional
Description: keep a website up on a handful of cheap servers
 One binary and one config file: heartbeats and consensus-guarded ownership
 of floating IPs (replacing Heartbeat or keepalived), a health-checked HTTP
 and TCP load balancer (replacing HAProxy or nginx), and MariaDB replication
 with safe failover and switchover, with a status view of the whole cluster,
 an HTTP API, Prometheus metrics and a dashboard.
CONTROL

out="target/debian/keepup_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$out" >/dev/null
echo "$out"
