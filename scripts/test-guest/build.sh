#!/usr/bin/env bash
# Builds the test guest from Debian packages only: the kernel of linux-image-amd64 with
# the modules the root disk needs, an initramfs (busybox + those modules) and a root
# disk (ext4 in qcow2) holding busybox, qemu-guest-agent with its shared libraries and
# a writer workload. The artefacts are cached under a directory named after the
# package versions and this builder's own files, so a later run with nothing new to
# build only checks the versions and returns; `current` points at the newest build.
#
#   build.sh [--cache-dir DIR]      prints the artefacts' directory on stdout
#
# Needs apt (Debian 12 mirrors), dpkg-deb, binutils (objcopy, readelf), e2fsprogs
# and qemu-utils.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE_DIR=/var/cache/libvirt-backup-test-guest
ROOT_DISK_SIZE=256M
# What the root disk needs from the kernel; their module dependencies follow.
# ext4 and jbd2 ask for crc32c through the crypto API (a soft dependency nothing
# would load here): crc32c_generic provides it on any CPU, TCG's included.
ROOT_MODULES=(virtio_pci virtio_blk virtio_console crc32c_generic ext4)
ARTEFACTS=(vmlinux initrd.img root.qcow2)

log() { printf 'test-guest: %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}

while [ $# -gt 0 ]; do
  case "$1" in
    --cache-dir)
      [ $# -ge 2 ] || die "--cache-dir needs a directory"
      CACHE_DIR=$2
      shift 2
      ;;
    *) die "unknown argument '$1' (usage: build.sh [--cache-dir DIR])" ;;
  esac
done

for tool in apt-get apt-cache dpkg-deb objcopy readelf mkfs.ext4 qemu-img flock sha256sum; do
  command -v "$tool" >/dev/null || die "$tool not found (run scripts/setup-host.sh first)"
done

# One apt-cache call (each one reads all of apt's lists): the candidates' records.
candidates() {
  apt-cache show --no-all-versions linux-image-amd64 busybox-static qemu-guest-agent 2>/dev/null |
    awk '/^Package:/ { package = $2 } /^Version:/ { print package, "version", $2 }
         /^Depends:/ && package == "linux-image-amd64" { print package, "depends", $2, $4 }'
}
RECORDS=$(candidates)
# apt's lists are missing on a fresh container: fetch them once.
if [ "$(wc -l <<<"$RECORDS")" -lt 4 ]; then
  log "updating apt's package lists"
  apt-get update -qq
  RECORDS=$(candidates)
fi
field() { awk -v package="$1" -v field="$2" '$1 == package && $2 == field { print $3; exit }' <<<"$RECORDS"; }

# linux-image-amd64 depends on exactly one version of the versioned kernel package.
KERNEL_PACKAGE=$(field linux-image-amd64 depends)
kernel_version=$(awk '$1 == "linux-image-amd64" && $2 == "depends" { print $4; exit }' <<<"$RECORDS" | tr -d ')')
busybox_version=$(field busybox-static version)
agent_version=$(field qemu-guest-agent version)
[[ $KERNEL_PACKAGE == linux-image-*-amd64 && -n $kernel_version && -n $busybox_version && -n $agent_version ]] ||
  die "cannot tell which versions apt would install; apt-cache show said: ${RECORDS:-nothing}"
declare -A VERSIONS=(
  [$KERNEL_PACKAGE]=$kernel_version
  [busybox-static]=$busybox_version
  [qemu-guest-agent]=$agent_version
)

# The cache key: the packages' versions and every file of this builder.
key=$(
  {
    for package in $(printf '%s\n' "${!VERSIONS[@]}" | sort); do printf '%s=%s\n' "$package" "${VERSIONS[$package]}"; done
    cd "$HERE" && find . -type f | LC_ALL=C sort | xargs sha256sum
  } | sha256sum | cut -c1-16
)
KERNEL_RELEASE=${KERNEL_PACKAGE#linux-image-}
BUILD_NAME="$KERNEL_RELEASE-$key"

mkdir -p "$CACHE_DIR" || die "cannot create $CACHE_DIR (run as root, or pass --cache-dir)"
exec 9>"$CACHE_DIR/.lock"
flock 9

complete() {
  local artefact
  for artefact in "${ARTEFACTS[@]}" manifest; do [ -s "$1/$artefact" ] || return 1; done
}

point_current_at() {
  ln -sfn "$1" "$CACHE_DIR/.current.new"
  mv -T "$CACHE_DIR/.current.new" "$CACHE_DIR/current"
}

if complete "$CACHE_DIR/$BUILD_NAME"; then
  [ "$(readlink "$CACHE_DIR/current" 2>/dev/null)" = "$BUILD_NAME" ] || point_current_at "$BUILD_NAME"
  printf '%s\n' "$CACHE_DIR/$BUILD_NAME"
  exit 0
fi

log "building $BUILD_NAME"
WORK=$(mktemp -d "$CACHE_DIR/.build-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# apt's download sandbox user must be able to write here.
chmod 755 "$WORK"
mkdir -p "$WORK/debs" "$WORK/initramfs" "$WORK/root" "$WORK/out"

# --- packages --------------------------------------------------------------------
(
  cd "$WORK/debs"
  for package in "${!VERSIONS[@]}"; do printf '%s=%s\n' "$package" "${VERSIONS[$package]}"; done |
    xargs apt-get download -qq -o APT::Sandbox::User=root
)
extracted() { printf '%s/x/%s' "$WORK" "$1"; }
for package in "${!VERSIONS[@]}"; do
  mkdir -p "$(extracted "$package")"
  dpkg-deb -x "$WORK"/debs/"${package}"_*.deb "$(extracted "$package")"
done
rm -rf "$WORK/debs"

KERNEL_TREE=$(extracted "$KERNEL_PACKAGE")
BUSYBOX=$(extracted busybox-static)/bin/busybox
QEMU_GA=$(extracted qemu-guest-agent)/usr/sbin/qemu-ga

# Under TCG, unpacking vmlinuz costs the guest seconds (tens of seconds on a busy
# host): QEMU is given the uncompressed ELF kernel inside it instead, which it boots
# through the PVH entry point (the Xen note PHYS32_ENTRY, type 0x12).
extract_vmlinux() { # vmlinuz output
  local magic decompress offset
  for magic in '\xfd7zXZ\x00:xz' '\x28\xb5\x2f\xfd:zstd' '\x1f\x8b\x08:gzip'; do
    decompress=${magic##*:}
    for offset in $(LC_ALL=C grep -aboP "${magic%:*}" "$1" | cut -d: -f1); do
      tail -c +$((offset + 1)) "$1" | "$decompress" -dc >"$2" 2>/dev/null || true
      readelf -n "$2" 2>/dev/null | grep -q 'Unknown note type: (0x00000012)' && return 0
    done
  done
  return 1
}
extract_vmlinux "$KERNEL_TREE/boot/vmlinuz-$KERNEL_RELEASE" "$WORK/out/vmlinux" ||
  die "found no PVH-bootable ELF kernel inside vmlinuz-$KERNEL_RELEASE"

# --- kernel modules, dependencies first --------------------------------------------
MODULE_DIR="$KERNEL_TREE/lib/modules/$KERNEL_RELEASE"
declare -A MODULE_PATHS=()
while IFS= read -r path; do
  name=${path##*/}
  MODULE_PATHS[${name%.ko}]=$path
done < <(find "$MODULE_DIR/kernel" -name '*.ko')

modinfo_field() { # module field
  objcopy -O binary --only-section=.modinfo "${MODULE_PATHS[$1]}" /dev/stdout | tr '\0' '\n' |
    sed -n "s/^$2=//p"
}

declare -A MODULE_STATE=()
LOAD_ORDER=()
add_module() {
  local name=${1//-/_} dependency
  [ -n "${MODULE_PATHS[$name]:-}" ] || die "module $name is not in $KERNEL_PACKAGE"
  case "${MODULE_STATE[$name]:-}" in
    done) return ;;
    visiting) die "module dependency cycle at $name" ;;
  esac
  MODULE_STATE[$name]=visiting
  for dependency in $(modinfo_field "$name" depends | tr ',' ' '); do add_module "$dependency"; done
  MODULE_STATE[$name]=done
  LOAD_ORDER+=("$name")
}
for module in "${ROOT_MODULES[@]}"; do add_module "$module"; done

# A soft dependency nothing provides would fail at mount time, far from its cause.
provided=" $(for m in "${LOAD_ORDER[@]}"; do printf '%s %s ' "$m" "$(modinfo_field "$m" alias | tr '\n' ' ')"; done) "
for module in "${LOAD_ORDER[@]}"; do
  for wanted in $(modinfo_field "$module" softdep | sed 's/^pre: *//; s/post:.*//'); do
    case "$provided" in
      *" $wanted "*) ;;
      *) die "module $module wants $wanted, which no module in the initramfs provides" ;;
    esac
  done
done

# --- busybox file trees ----------------------------------------------------------
install_busybox() { # tree
  mkdir -p "$1/bin" "$1/sbin" "$1/usr/bin" "$1/usr/sbin"
  cp "$BUSYBOX" "$1/bin/busybox"
  local applet
  for applet in $("$BUSYBOX" --list-full); do
    # -L too: the links are absolute, -e alone would look at this host's file.
    [ "$applet" = bin/busybox ] || [ -e "$1/$applet" ] || [ -L "$1/$applet" ] || ln -s /bin/busybox "$1/$applet"
  done
}

# --- initramfs ---------------------------------------------------------------------
INITRAMFS="$WORK/initramfs"
install_busybox "$INITRAMFS"
mkdir -p "$INITRAMFS/lib/modules" "$INITRAMFS/dev" "$INITRAMFS/proc" "$INITRAMFS/sys"
mknod -m 600 "$INITRAMFS/dev/console" c 5 1
for module in "${LOAD_ORDER[@]}"; do cp "${MODULE_PATHS[$module]}" "$INITRAMFS/lib/modules/$module.ko"; done
printf '%s\n' "${LOAD_ORDER[@]}" >"$INITRAMFS/lib/modules/load-order"
install -m 755 "$HERE/initramfs-init" "$INITRAMFS/init"
# Uncompressed, for the same reason as the kernel: it is small, decompressing is not.
(cd "$INITRAMFS" && find . | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc 2>/dev/null) >"$WORK/out/initrd.img"

# --- root disk -----------------------------------------------------------------------
ROOT="$WORK/root"
# Our files first: copying onto busybox's absolute links would write through them.
cp -a "$HERE/rootfs/." "$ROOT/"
install_busybox "$ROOT"
mkdir -p "$ROOT"/{dev,proc,sys,run,tmp,root,var/lib,lib64,lib/x86_64-linux-gnu}
chmod 1777 "$ROOT/tmp"
ln -s /run "$ROOT/var/run"
install -m 755 "$QEMU_GA" "$ROOT/usr/sbin/qemu-ga"

# ldd without running anything: each NEEDED library, from the extracted packages
# first, else from this (Debian 12) host's copy of the same package.
LIBRARY_DIRS=(
  "$(extracted qemu-guest-agent)/usr/lib/x86_64-linux-gnu"
  /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu /lib64
)
declare -A LIBRARY_SOURCES=()
find_library() {
  local dir
  for dir in "${LIBRARY_DIRS[@]}"; do
    [ -e "$dir/$1" ] && { printf '%s' "$dir/$1"; return 0; }
  done
  return 1
}
copy_needed_libraries() { # elf
  local library source
  for library in $(readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    [ -z "${LIBRARY_SOURCES[$library]:-}" ] || continue
    source=$(find_library "$library") ||
      die "qemu-ga needs $library, found neither in the extracted packages nor on this host (install the Debian package that provides it)"
    LIBRARY_SOURCES[$library]=$source
    cp -L "$source" "$ROOT/lib/x86_64-linux-gnu/$library"
    copy_needed_libraries "$ROOT/lib/x86_64-linux-gnu/$library"
  done
}
copy_needed_libraries "$ROOT/usr/sbin/qemu-ga"
interpreter=$(readelf -l "$ROOT/usr/sbin/qemu-ga" | sed -n 's/.*interpreter: \(.*\)\]/\1/p')
cp -L "$interpreter" "$ROOT$interpreter"
LIBRARY_SOURCES[${interpreter##*/}]=$interpreter

package_of() { # host file -> "package version", or "" when dpkg does not know it
  local candidate package
  for candidate in "$1" "/usr$1" "$(readlink -f "$1")"; do
    package=$(dpkg -S "$candidate" 2>/dev/null | head -n 1 | sed 's/: .*//') || continue
    [ -n "$package" ] && { printf '%s %s' "$package" "$(dpkg-query -W -f='${Version}' "$package" 2>/dev/null)"; return; }
  done
}

mkfs.ext4 -q -F -L test-guest -d "$ROOT" -E lazy_itable_init=0,lazy_journal_init=0,root_owner=0:0 \
  "$WORK/root.raw" "$ROOT_DISK_SIZE" >/dev/null
qemu-img convert -q -f raw -O qcow2 "$WORK/root.raw" "$WORK/out/root.qcow2"
rm -f "$WORK/root.raw"

# --- manifest, then publish ----------------------------------------------------------
{
  printf 'build %s\n' "$BUILD_NAME"
  printf 'kernel-release %s\n' "$KERNEL_RELEASE"
  for package in $(printf '%s\n' "${!VERSIONS[@]}" | sort); do printf 'package %s %s\n' "$package" "${VERSIONS[$package]}"; done
  printf 'modules %s\n' "${LOAD_ORDER[*]}"
  for library in $(printf '%s\n' "${!LIBRARY_SOURCES[@]}" | sort); do
    source=${LIBRARY_SOURCES[$library]}
    case "$source" in
      "$WORK"/*) printf 'library %s qemu-guest-agent\n' "$library" ;;
      *) printf 'library %s %s (%s)\n' "$library" "$source" "$(package_of "$source")" ;;
    esac
  done
  printf 'root-disk ext4 %s\n' "$ROOT_DISK_SIZE"
  for artefact in "${ARTEFACTS[@]}"; do printf 'size %s %s\n' "$artefact" "$(stat -c %s "$WORK/out/$artefact")"; done
} >"$WORK/out/manifest"

previous=$(readlink "$CACHE_DIR/current" 2>/dev/null || true)
rm -rf "${CACHE_DIR:?}/$BUILD_NAME"
mv "$WORK/out" "$CACHE_DIR/$BUILD_NAME"
point_current_at "$BUILD_NAME"
# Keep the build a running test may still use; older ones go.
for old in "$CACHE_DIR"/*/; do
  old=$(basename "$old")
  [ -L "$CACHE_DIR/$old" ] || [ "$old" = "$BUILD_NAME" ] || [ "$old" = "$previous" ] || rm -rf "${CACHE_DIR:?}/$old"
done
log "built $BUILD_NAME ($(du -sh "$CACHE_DIR/$BUILD_NAME" | cut -f1))"
printf '%s\n' "$CACHE_DIR/$BUILD_NAME"
