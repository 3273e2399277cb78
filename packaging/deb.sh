#!/usr/bin/env bash
# `make deb`: the Debian package of spocgw, built with dpkg-deb from the binary ($SPOCGW_BIN,
# default the release build), then checked with lintian (any error or warning fails the build).
#
#   OUT=DIR    where the .deb, its lintian report and the separate debug file go (target/deb)
#
# The package: /usr/bin/spocgw (stripped; its debug information is kept beside the package as
# spocgw.debug, linked by .gnu_debuglink), the systemd unit the appliance image shares, the
# user (sysusers.d) and /var/lib/spocgw (tmpfiles.d), an example configuration, the manual
# pages (spocgw(1) and one per command) and bash, zsh and fish completions generated from the
# CLI definition.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${SPOCGW_BIN:-target/release/spocgw}
OUT=${OUT:-target/deb}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
ARCH=$(dpkg --print-architecture)
[ -x "$BIN" ] || { echo "deb: no binary at $BIN (cargo build --release, or set SPOCGW_BIN)" >&2; exit 2; }
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$OUT" "$ROOT/DEBIAN" "$ROOT/usr/bin" "$ROOT/lib/systemd/system" "$ROOT/usr/lib/sysusers.d" \
  "$ROOT/usr/lib/tmpfiles.d" "$ROOT/etc/spocgw" "$ROOT/usr/share/doc/spocgw/examples" "$ROOT/usr/share/man/man1" \
  "$ROOT/usr/share/bash-completion/completions" "$ROOT/usr/share/zsh/vendor-completions" \
  "$ROOT/usr/share/fish/vendor_completions.d"

# The binary, stripped; its debug information separate (for a crash's backtrace).
objcopy --only-keep-debug "$BIN" "$OUT/spocgw.debug"
objcopy --strip-all --remove-section=.comment --add-gnu-debuglink="$OUT/spocgw.debug" "$BIN" "$ROOT/usr/bin/spocgw"
chmod 0755 "$ROOT/usr/bin/spocgw"

install -m 0644 packaging/spocgw.service "$ROOT/lib/systemd/system/spocgw.service"
install -m 0644 packaging/sysusers.conf "$ROOT/usr/lib/sysusers.d/spocgw.conf"
install -m 0644 packaging/tmpfiles.conf "$ROOT/usr/lib/tmpfiles.d/spocgw.conf"
install -m 0644 packaging/gateway.toml.example "$ROOT/etc/spocgw/gateway.toml.example"
install -m 0644 packaging/gateway.toml.example "$ROOT/usr/share/doc/spocgw/examples/gateway.toml"
install -m 0644 packaging/copyright "$ROOT/usr/share/doc/spocgw/copyright"
for d in README.md docs/*.md; do gzip -9n <"$d" >"$ROOT/usr/share/doc/spocgw/$(basename "$d").gz"; done
DATE=$(date -R -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")
printf 'spocgw (%s) unstable; urgency=medium\n\n  * Release %s (see the git history).\n\n -- spocgw maintainers <spocgw@example.invalid>  %s\n' \
  "$VERSION" "$VERSION" "$DATE" | gzip -9n >"$ROOT/usr/share/doc/spocgw/changelog.gz"

# The manual pages and completions, from the CLI definition.
"$BIN" man --out "$ROOT/usr/share/man/man1"
gzip -9n "$ROOT"/usr/share/man/man1/*.1
"$BIN" completions bash >"$ROOT/usr/share/bash-completion/completions/spocgw"
"$BIN" completions zsh >"$ROOT/usr/share/zsh/vendor-completions/_spocgw"
"$BIN" completions fish >"$ROOT/usr/share/fish/vendor_completions.d/spocgw.fish"

# Shared libraries the binary needs, as Debian packages (what dpkg-shlibdeps would say).
DEPENDS=$(ldd "$BIN" | awk '/=> \//{print $3}' | while read -r lib; do
  real=$(readlink -f "$lib")
  pkg=$(dpkg -S "$lib" 2>/dev/null || dpkg -S "$real" 2>/dev/null || true)
  pkg=${pkg%%:*}
  [ -n "$pkg" ] && printf '%s (>= %s)\n' "$pkg" "$(dpkg-query -W -f '${Version}' "$pkg" | sed 's/-[^-]*$//')"
done | sort -u | paste -sd, | sed 's/,/, /g')

(cd "$ROOT" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$ROOT/DEBIAN/md5sums"
for s in postinst prerm postrm; do install -m 0755 "packaging/$s" "$ROOT/DEBIAN/$s"; done
echo /etc/spocgw/gateway.toml.example >"$ROOT/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
cat >"$ROOT/DEBIAN/control" <<CONTROL
Package: spocgw
Version: $VERSION
Architecture: $ARCH
Maintainer: spocgw maintainers <spocgw@example.invalid>
Installed-Size: $SIZE
Depends: $DEPENDS, systemd (>= 252)
Section: net
Priority: optional
Homepage: https://example.invalid/spocgw
Description: high-assurance SPOC interoperability gateway
 spocgw sits between police border systems and a Ministry of Interior's
 National SPOC (fingerprint verification, identity and document checks, the
 CSN 36 9791 certificate exchange). It terminates mutual TLS with revocation
 checks, reads every message once through an XML firewall and XSD validation,
 enforces an access policy officers can read and test, minimises replies, and
 writes a tamper-evident audit log before anything is forwarded. Keys live in
 the TPM or are sealed by it.
 .
 The service starts only once /etc/spocgw/gateway.toml exists (an example is
 installed beside it).
CONTROL

DEB="$OUT/spocgw_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$DEB" >/dev/null
echo "deb: $DEB ($(du -h "$DEB" | cut -f1)); debug file $OUT/spocgw.debug" >&2
if command -v lintian >/dev/null; then
  lintian --tag-display-limit 0 --display-info "$DEB" >"$OUT/lintian.txt" 2>&1 || true
  cat "$OUT/lintian.txt" >&2
  if grep -qE '^(E|W):' "$OUT/lintian.txt"; then
    echo "deb: lintian reports errors or warnings ($OUT/lintian.txt)" >&2
    exit 1
  fi
  echo "deb: lintian clean (no error, no warning; $(grep -c '^I:' "$OUT/lintian.txt" || true) informational tags)" >&2
else
  echo "deb: lintian is not installed (Debian package lintian)" >&2
  exit 1
fi
