#!/usr/bin/env bash
# make image: the spocgw appliance image, from Debian 12's packages only.
#
#   firmware-image/out/disk.img          GPT disk: ESP (the UKI), root (erofs), verity hashes,
#                                        data (empty; formatted ext4 on first boot)
#   firmware-image/out/spocgw.efi        the unified kernel image (kernel, initramfs, command
#                                        line with the root hash, os-release), signed for
#                                        Secure Boot with the db key
#   firmware-image/out/OVMF_VARS.fd      the reference platform's UEFI variables: the project's
#                                        PK, KEK and db enrolled, Secure Boot on
#   firmware-image/out/secureboot/       PK.pem, KEK.pem, db.pem: the certificates to enroll
#   firmware-image/out/expected-pcrs.json  PCR 7 (Secure Boot state, predicted from the enrolled
#                                        variables) and PCR 11 (the UKI and the boot phases,
#                                        predicted by systemd-measure), and the image's digests
#   firmware-image/out/pcr-policy.json   those values signed with the image-signing key (the
#                                        keys' signed PCR policy; on the ESP)
#   firmware-image/out/manifest.txt      every package and version in the root
#
# Inputs: SPOCGW_BIN (default target/release/spocgw), SOURCE_DATE_EPOCH (default: the last
# commit's time), IMAGE_SIGNING_KEY (PKCS#8 P-256 PEM; default: a development key made once in
# firmware-image/build/keys/, git-ignored), SECUREBOOT_KEYS (a directory with PK, KEK and db
# as NAME.pem certificates and db.key; default: development keys made once in
# firmware-image/build/keys/secureboot/). Packages are fetched once into
# firmware-image/build/cache/ and the Python tools into firmware-image/build/venv/, and reused.
# Needs root (mmdebstrap --mode=root).
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=firmware-image
B=$HERE/build
OUT=$HERE/out
BIN=${SPOCGW_BIN:-target/release/spocgw}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 1764547200)}
export SOURCE_DATE_EPOCH
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# Fixed identifiers, so that the same inputs give the same bytes.
DISK_UUID=5f3d0d58-0d1e-4c59-9d6f-53504f434757
ROOT_UUID=6a1b7c3e-2f4d-4e5a-8b9c-0d1e2f3a4b5c
VERITY_UUID=7b2c8d4f-3a5e-4f6b-9cad-1e2f3a4b5c6d
ESP_UUID=8c3d9e5a-4b6f-4a7c-8dbe-2f3a4b5c6d7e
DATA_UUID=9d4eaf6b-5c7a-4b8d-9ecf-3a4b5c6d7e8f
VERITY_SALT=$(printf 'spocgw-verity-salt' | sha256sum | cut -c1-64)
DATA_MB=${DATA_MB:-512}

[ "$(id -u)" = 0 ] || { echo "make image needs root (mmdebstrap --mode=root, a chroot)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "no spocgw binary at $BIN (cargo build --release, or SPOCGW_BIN=...)" >&2; exit 1; }
for t in mmdebstrap mkfs.erofs veritysetup mkfs.vfat mcopy sfdisk objcopy cpio sbsign; do
  command -v "$t" >/dev/null || { echo "missing $t: make image-deps" >&2; exit 1; }
done
STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
MEASURE=/usr/lib/systemd/systemd-measure
[ -f "$STUB" ] && [ -x "$MEASURE" ] || { echo "missing systemd-boot-efi / systemd-measure: make image-deps" >&2; exit 1; }
[ -f /usr/share/OVMF/OVMF_VARS_4M.fd ] || { echo "missing OVMF_VARS_4M.fd: make image-deps" >&2; exit 1; }
command -v sign-efi-sig-list >/dev/null || { echo "missing sign-efi-sig-list: make image-deps" >&2; exit 1; }

started=$(date +%s)
mkdir -p "$B/cache" "$B/keys" "$OUT"
R=$B/rootfs
rm -rf "$R" "$B/initramfs" "$B/parts" "$B/extra"
mkdir -p "$B/parts"

# The image-signing key: its public half goes into the root (provisioning binds the keys to
# policies it signs), its private half signs this image's PCR policy and stays off the image.
KEY=${IMAGE_SIGNING_KEY:-$B/keys/image-signing.key.pem}
if [ ! -f "$KEY" ]; then
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$KEY" 2>/dev/null
fi
# The Secure Boot keys: PK and KEK (kept offline in production: they sign db and dbx
# updates) and db, whose key signs the UKI. The firmware boots nothing else.
SBK=${SECUREBOOT_KEYS:-$B/keys/secureboot}
mkdir -p "$SBK" "$OUT/secureboot"
for k in PK KEK db; do
  if [ ! -f "$SBK/$k.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -subj "/O=spocgw/CN=spocgw $k" \
      -keyout "$SBK/$k.key" -out "$SBK/$k.pem" 2>/dev/null
  fi
  cp "$SBK/$k.pem" "$OUT/secureboot/$k.pem"
done
[ -f "$SBK/db.key" ] || { echo "$SBK/db.key: the db key signs the UKI" >&2; exit 1; }
# The Python tools (virt-firmware), pinned, in the build directory.
VENV=$B/venv
if ! cmp -s "$HERE/requirements.txt" "$VENV/.installed" 2>/dev/null; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
  cp "$HERE/requirements.txt" "$VENV/.installed"
fi
mkdir -p "$B/extra/usr/share/spocgw" "$B/extra/usr/share/doc/spocgw" "$B/extra/usr/bin"
# The gateway, without its debug line tables (the release build keeps them for profiling).
objcopy --strip-debug "$BIN" "$B/extra/usr/bin/spocgw"
openssl pkey -in "$KEY" -pubout -out "$B/extra/usr/share/spocgw/image-signing.pub.pem"
cp "$B/extra/usr/share/spocgw/image-signing.pub.pem" "$OUT/image-signing.pub.pem"
cp docs/appliance.md "$B/extra/usr/share/doc/spocgw/appliance.md"
# The partitions the appliance uses, by UUID, on the disk that holds its verified root
# (/usr/lib/spocgw/disks): never a partition of another disk with the same name.
printf 'ESP_UUID=%s\nDATA_UUID=%s\n' "$ESP_UUID" "$DATA_UUID" >"$B/extra/usr/share/spocgw/partitions.env"
# The unit and the user are the Debian package's (packaging/); the image adds a drop-in.
mkdir -p "$B/extra/usr/lib/systemd/system" "$B/extra/usr/lib/sysusers.d"
cp packaging/spocgw.service "$B/extra/usr/lib/systemd/system/spocgw.service"
cp packaging/sysusers.conf "$B/extra/usr/lib/sysusers.d/spocgw.conf"

# 1. The root: Debian's packages, with the package downloads kept in the build directory.
PACKAGES=systemd,systemd-sysv,udev,kmod,linux-image-cloud-amd64,busybox-static,cryptsetup-bin,e2fsprogs,nftables
PACKAGES+=,libtss2-esys-3.0.2-0,libtss2-tctildr0,libtss2-mu0,libtss2-sys1,libtss2-tcti-device0
# systemd-pcrphase dlopens libtss2-rc too (without it the phases are not measured and no key opens)
PACKAGES+=,libtss2-rc0
echo "image: root filesystem (mmdebstrap $SUITE)" >&2
mmdebstrap --mode=root --variant=minbase --include="$PACKAGES" \
  --aptopt='APT::Install-Recommends "false"' \
  --skip=download/empty \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
  --setup-hook="sync-in $B/cache /var/cache/apt/archives/" \
  --customize-hook="sync-out /var/cache/apt/archives $B/cache" \
  --customize-hook="copy-in $HERE/rootfs/. /" \
  --customize-hook="copy-in $B/extra/. /" \
  --customize-hook='chroot "$1" /usr/lib/spocgw/image-setup' \
  "$SUITE" "$R" "$MIRROR" >"$B/mmdebstrap.log" 2>&1 || { tail -30 "$B/mmdebstrap.log" >&2; exit 1; }
chroot "$R" dpkg-query -W -f '${Package} ${Version}\n' | LC_ALL=C sort >"$OUT/manifest.txt"

# The service's sandbox, as systemd scores it (at most 1.5, or the build stops).
systemd-analyze security --offline=true --root="$R" spocgw.service >"$OUT/security.txt" 2>&1 || true
EXPOSURE=$(sed -n 's/.*Overall exposure level for spocgw.service: \([0-9.]*\).*/\1/p' "$OUT/security.txt")
awk -v e="${EXPOSURE:-99}" 'BEGIN { exit !(e <= 1.5) }' \
  || { echo "spocgw.service exposure ${EXPOSURE:-unknown} is over 1.5 ($OUT/security.txt)" >&2; exit 1; }

KVER=$(basename "$(ls -d "$R"/lib/modules/*)")
cp "$R/boot/vmlinuz-$KVER" "$B/parts/vmlinuz"

# 2. The initramfs: busybox, veritysetup and its libraries, the modules to reach the root.
echo "image: initramfs" >&2
I=$B/initramfs
mkdir -p "$I"/{bin,sbin,dev,proc,sys,run,newroot,lib/modules}
cp "$R/bin/busybox" "$I/bin/busybox"
cp "$HERE/initramfs/init" "$I/init"
chmod 0755 "$I/init"
cp "$R/sbin/veritysetup" "$I/sbin/veritysetup"
for lib in $(chroot "$R" ldd /sbin/veritysetup | awk '/=>/ {print $3} /ld-linux/ {print $1}'); do
  mkdir -p "$I$(dirname "$lib")"
  cp -L "$R$lib" "$I$lib"
done
# The modules, in load order (dependencies first), as insmod lines the init script runs.
for m in virtio_pci virtio_blk dm-verity erofs; do
  chroot "$R" modprobe -S "$KVER" --show-depends "$m"
done | awk '$1 == "insmod" {print $2}' | awk '!seen[$0]++' >"$B/modules.list"
: >"$I/modules"
while read -r m; do
  cp "$R$m" "$I/lib/modules/"
  echo "/lib/modules/$(basename "$m")" >>"$I/modules"
done <"$B/modules.list"
find "$I" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
(cd "$I" && find . -print0 | LC_ALL=C sort -z | cpio --null --create --format=newc --reproducible --quiet) \
  | gzip -9 -n >"$B/parts/initrd"

# 3. The read-only root: erofs, timestamps clamped, with dm-verity hashes.
echo "image: erofs root and dm-verity" >&2
rm -rf "$R/boot"/* "$R/var/cache/apt/archives"/*.deb "$R/var/lib/apt/lists"/*
mkdir -p "$R/var/lib/spocgw"
find "$R" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} + 2>/dev/null || true
mkfs.erofs -T"$SOURCE_DATE_EPOCH" -U "$ROOT_UUID" -zlz4hc "$B/parts/root.erofs" "$R" >/dev/null
veritysetup format "$B/parts/root.erofs" "$B/parts/root.verity" --salt="$VERITY_SALT" --uuid="$VERITY_UUID" \
  >"$B/verity.txt"
ROOTHASH=$(awk '/^Root hash:/ {print $3}' "$B/verity.txt")

# 4. The release's boot artefacts (firmware-image/release.sh): the UKI (kernel, initramfs,
# command line with the root hash and the release number, os-release), signed with the db
# key; the reference variables with the releases firmware-image/revoked.txt revokes in dbx;
# PCR 7 and PCR 11 predicted (7: the Secure Boot state; 11: what systemd-stub measures, then
# the boot phases `sysinit` and `ready` systemd-pcrphase measures before the setup and the
# gateway start) and signed with the image-signing key.
echo "image: unified kernel image, Secure Boot variables, signed PCR policy" >&2
RELEASE=${RELEASE:-1}
CMDLINE=${CMDLINE:-"console=ttyS0 ro panic=5 systemd.gpt_auto=0 spocgw.roothash=$ROOTHASH spocgw.release=$RELEASE systemd.show_status=auto"}
printf '%s' "$CMDLINE" >"$B/parts/cmdline"
cp "$R/usr/lib/os-release" "$B/parts/os-release"
SBK=$SBK KEY=$KEY VENV=$VENV BIN=$BIN RELEASE=$RELEASE REVOKED=$HERE/revoked.txt POLICY_CACHE=$B/keys \
  bash "$HERE/release.sh" "$B/parts" "$OUT"

# 5. The ESP, and the disk: GPT with fixed identifiers, partitions written in place.
echo "image: disk" >&2
rm -f "$B/parts/esp.img"
mkfs.vfat --invariant -C -n SPOCGW-ESP "$B/parts/esp.img" $((64 * 1024)) >/dev/null
# The tree staged with clamped times and copied whole, so that every FAT entry (directories
# too) carries SOURCE_DATE_EPOCH.
rm -rf "$B/esp"
mkdir -p "$B/esp/EFI/BOOT" "$B/esp/spocgw"
cp "$OUT/spocgw.efi" "$B/esp/EFI/BOOT/BOOTX64.EFI"
cp "$OUT/pcr-policy.json" "$B/esp/spocgw/pcr-policy.json"
find "$B/esp" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mcopy -s -m -i "$B/parts/esp.img" "$B/esp/EFI" "$B/esp/spocgw" ::/
mb() { echo $(( ($(stat -c%s "$1") + 1048575) / 1048576 )); }
ESP_MB=64 ROOT_MB=$(($(mb "$B/parts/root.erofs") + 1)) VERITY_MB=$(($(mb "$B/parts/root.verity") + 1))
TOTAL_MB=$((1 + ESP_MB + ROOT_MB + VERITY_MB + DATA_MB + 1))
rm -f "$OUT/disk.img"
truncate -s "${TOTAL_MB}M" "$OUT/disk.img"
sfdisk --quiet "$OUT/disk.img" <<EOF
label: gpt
label-id: $DISK_UUID
unit: sectors
start=2048, size=$((ESP_MB * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=$ESP_UUID, name=spocgw-esp
size=$((ROOT_MB * 2048)), type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, uuid=$ROOT_UUID, name=spocgw-root
size=$((VERITY_MB * 2048)), type=2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5, uuid=$VERITY_UUID, name=spocgw-verity
size=$((DATA_MB * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=$DATA_UUID, name=spocgw-data
EOF
put() { dd if="$1" of="$OUT/disk.img" bs=1M seek="$2" conv=notrunc,sparse status=none; }
put "$B/parts/esp.img" 1
put "$B/parts/root.erofs" $((1 + ESP_MB))
put "$B/parts/root.verity" $((1 + ESP_MB + ROOT_MB))

# 6. The record a verifier and an operator need.
IMAGE_SHA=$(sha256sum "$OUT/disk.img" | cut -d' ' -f1)
python3 - "$OUT/release.json" "$OUT/expected-pcrs.json" "$ROOTHASH" "$IMAGE_SHA" "$KVER" "$EXPOSURE" \
  "$SOURCE_DATE_EPOCH" <<'PY'
import json, sys
release, out, roothash, image, kernel, exposure, epoch = sys.argv[1:]
r = json.load(open(release))
r.update({"bank": "sha256", "roothash": roothash, "image_sha256": image, "kernel": kernel,
          "service_exposure": exposure, "source_date_epoch": int(epoch)})
json.dump(r, open(out, "w"), indent=2)
PY
PCR7=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["pcrs"]["7"])' "$OUT/release.json")
PCR11=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["pcrs"]["11"])' "$OUT/release.json")
echo "$IMAGE_SHA  disk.img" >"$OUT/image.sha256"
echo "image: $OUT/disk.img ($(du -h --apparent-size "$OUT/disk.img" | cut -f1) apparent, root $(du -h "$B/parts/root.erofs" | cut -f1)), sha256 $IMAGE_SHA, PCR 7 $PCR7, PCR 11 $PCR11, spocgw.service exposure $EXPOSURE, built in $(( $(date +%s) - started )) s" >&2
