#!/usr/bin/env bash
# A release's boot artefacts, from its parts: the UKI signed for Secure Boot, the reference
# platform's variables with the releases it revokes in dbx, the PCR 7 and PCR 11 values the
# gateway's keys open in, and those values signed with the image-signing key. `make image`
# runs it (firmware-image/build.sh); a security update runs it with the older releases'
# UKIs listed in firmware-image/revoked.txt (docs/appliance.md, "Updates and revocation").
#
#   release.sh PARTS OUT
#
# PARTS holds vmlinuz, initrd, os-release and cmdline. OUT receives:
#   spocgw.efi         the signed UKI
#   OVMF_VARS.fd       OVMF's variables: the project's PK, KEK and db, dbx, Secure Boot on
#   dbx.auth           (when revoking) the dbx update signed with the KEK, for machines in the
#                      field: the appliance applies it from the provisioning medium's update/
#   pcr-policy.json    PCR 7 and PCR 11 signed with the image-signing key
#   release.json       the values, the Secure Boot state and the UKI's digests
#
# Environment: SBK (PK, KEK, db as NAME.pem and NAME.key), KEY (the image-signing key), VENV
# (virt-firmware), BIN (spocgw, for `tpm authorize`), RELEASE, REVOKED (a file of authenticode
# SHA-256 digests, one a line, # comments), SOURCE_DATE_EPOCH, POLICY_CACHE (a directory where
# signed policies are kept: an ECDSA signature differs each time it is made).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PARTS=$1
OUT=$2
: "${SBK:?}" "${KEY:?}" "${VENV:?}" "${BIN:?}" "${RELEASE:?}" "${SOURCE_DATE_EPOCH:?}" "${POLICY_CACHE:?}"
STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
MEASURE=/usr/lib/systemd/systemd-measure
OVMF_VARS_TEMPLATE=/usr/share/OVMF/OVMF_VARS_4M.fd
# The owner GUID of the project's Secure Boot entries (fixed: it is part of what PCR 7 measures).
SB_OWNER=5350434f-6777-4000-8000-73706f636777
# What systemd-pcrphase measures into PCR 11 before the setup and the gateway start.
PHASES=sysinit:ready
mkdir -p "$OUT"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

# The UKI: objcopy adds the sections to systemd-stub, page-aligned after its own.
align() { echo $(( ($1 + 0xfff) / 0x1000 * 0x1000 )); }
stub_end=$(objdump -h "$STUB" | awk 'NF == 7 && $1 ~ /^[0-9]+$/ { print $3, $4 }' \
  | while read -r size vma; do echo $((0x$vma + 0x$size)); done | sort -n | tail -1)
osrel=$(align "$stub_end")
cmdline=$(align $((osrel + $(stat -c%s "$PARTS/os-release"))))
linux=$(align $((cmdline + $(stat -c%s "$PARTS/cmdline"))))
initrd=$(align $((linux + $(stat -c%s "$PARTS/vmlinuz"))))
objcopy \
  --add-section .osrel="$PARTS/os-release" --change-section-vma .osrel="$(printf 0x%x "$osrel")" \
  --add-section .cmdline="$PARTS/cmdline" --change-section-vma .cmdline="$(printf 0x%x "$cmdline")" \
  --add-section .linux="$PARTS/vmlinuz" --change-section-vma .linux="$(printf 0x%x "$linux")" \
  --add-section .initrd="$PARTS/initrd" --change-section-vma .initrd="$(printf 0x%x "$initrd")" \
  "$STUB" "$W/unsigned.efi"
# objcopy stamps the PE header with the time of the build: SOURCE_DATE_EPOCH instead, and no
# checksum (neither is measured: PCR 11 covers the sections, not the header).
python3 - "$W/unsigned.efi" "$SOURCE_DATE_EPOCH" <<'PY'
import struct, sys
path, stamp = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(0x3C)
    pe = struct.unpack("<I", f.read(4))[0]
    f.seek(pe + 8)
    f.write(struct.pack("<I", stamp & 0xFFFFFFFF))
    f.seek(pe + 24 + 64)
    f.write(struct.pack("<I", 0))
PY
# Signed with the db key (Authenticode; an RSA PKCS#1 v1.5 signature is the same each time it
# is made, so the signed UKI is reproducible).
sbsign --key "$SBK/db.key" --cert "$SBK/db.pem" --output "$OUT/spocgw.efi" "$W/unsigned.efi" 2>"$W/sbsign.log" \
  || { cat "$W/sbsign.log" >&2; exit 1; }
AUTHENTICODE=$("$VENV/bin/python" -c '
import sys, pefile
from virt.peutils import pesign
print(pesign.pe_authenticode_hash(pefile.PE(sys.argv[1])).hex())' "$OUT/spocgw.efi")

# dbx: the revoked releases' UKIs, as an update signed with the KEK (what a machine in the
# field applies; the firmware checks the KEK's signature) and in the reference variables.
revoked=$(sed -e 's/#.*//' "${REVOKED:-/dev/null}" | awk 'NF { print $1 }')
dbx=()
rm -f "$OUT/dbx.auth"
if [ -n "$revoked" ]; then
  hashes=()
  for h in $revoked; do
    [ "${#h}" = 64 ] || { echo "release.sh: $h is not a SHA-256 digest" >&2; exit 1; }
    [ "$h" != "$AUTHENTICODE" ] || { echo "release.sh: this release's own UKI is in the revocation list" >&2; exit 1; }
    hashes+=(--add-hash "$SB_OWNER" "$h")
  done
  "$VENV/bin/virt-fw-sigdb" "${hashes[@]}" --output "$W/dbx.esl" >/dev/null
  # A replacement of the whole dbx (the project's keys are the only ones in db: dbx holds only
  # its own revocations), time-stamped now: the firmware takes only a newer one.
  sign-efi-sig-list -k "$SBK/KEK.key" -c "$SBK/KEK.pem" dbx "$W/dbx.esl" "$OUT/dbx.auth" >/dev/null
  dbx=(--set-dbx "$OUT/dbx.auth")
fi
rm -f "$OUT/OVMF_VARS.fd"
"$VENV/bin/virt-fw-vars" --input "$OVMF_VARS_TEMPLATE" --set-pk "$SB_OWNER" "$SBK/PK.pem" \
  --add-kek "$SB_OWNER" "$SBK/KEK.pem" --add-db "$SB_OWNER" "$SBK/db.pem" "${dbx[@]}" --secure-boot \
  --output "$OUT/OVMF_VARS.fd" >"$W/virt-fw-vars.log" 2>&1 || { cat "$W/virt-fw-vars.log" >&2; exit 1; }

# PCR 7: the Secure Boot state (the variables above and the db entry that verifies the UKI).
# PCR 11: what systemd-stub measures of the UKI, then the boot phases.
"$VENV/bin/python" "$HERE/pcr7.py" "$OUT/OVMF_VARS.fd" "$SBK/db.pem" >"$W/pcr7.json"
PCR7=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["7"])' "$W/pcr7.json")
"$MEASURE" calculate --linux="$PARTS/vmlinuz" --initrd="$PARTS/initrd" --cmdline="$PARTS/cmdline" \
  --osrel="$PARTS/os-release" --bank=sha256 --phase="$PHASES" 2>/dev/null >"$W/measure.txt"
PCR11=$(sed -n 's/^11:sha256=//p' "$W/measure.txt")
[ "${#PCR11}" = 64 ] || { echo "systemd-measure gave no PCR 11 value" >&2; cat "$W/measure.txt" >&2; exit 1; }
[ "${#PCR7}" = 64 ] || { echo "no PCR 7 prediction" >&2; cat "$W/pcr7.json" >&2; exit 1; }

# Signed once per key and values, and kept (the same values give the same file).
mkdir -p "$POLICY_CACHE"
key_id=$(openssl pkey -in "$KEY" -pubout 2>/dev/null | sha256sum | cut -c1-16)
SIGNED=$POLICY_CACHE/pcr-policy.$key_id.$(printf '%s' "$PCR7$PCR11" | sha256sum | cut -c1-32).json
if [ ! -f "$SIGNED" ]; then
  printf '{"7": "%s", "11": "%s"}\n' "$PCR7" "$PCR11" >"$W/pcrs.json"
  "$BIN" tpm authorize --signing-key "$KEY" --values "$W/pcrs.json" --out "$SIGNED" \
    --comment "spocgw release $RELEASE: PCR 7 (Secure Boot, the project's keys, dbx) and PCR 11 (its UKI, phase $PHASES)" >/dev/null
fi
cp "$SIGNED" "$OUT/pcr-policy.json"

python3 - "$W/pcr7.json" "$OUT/release.json" "$RELEASE" "$PCR11" "$PHASES" "$AUTHENTICODE" \
  "$(sha256sum "$OUT/spocgw.efi" | cut -d' ' -f1)" "$revoked" <<'PY'
import json, sys
pcr7, out, release, pcr11, phases, authenticode, uki, revoked = sys.argv[1:]
sb = json.load(open(pcr7))
value7 = sb.pop("7")
json.dump({"release": int(release), "pcrs": {"7": value7, "11": pcr11}, "phases": phases, "secure_boot": sb,
           "uki_sha256": uki, "uki_authenticode_sha256": authenticode, "revoked": revoked.split()},
          open(out, "w"), indent=2)
PY
echo "release $RELEASE: PCR 7 $PCR7, PCR 11 $PCR11, UKI authenticode $AUTHENTICODE, ${revoked:+$(echo "$revoked" | wc -l) revoked}" >&2
