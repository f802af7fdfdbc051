#!/usr/bin/env bash
# Builds the prebuilt N-API binaries that npm ships, into prebuilds/linux-<arch>/
# (prebuildify, tagged glibc so that node-gyp-build never hands them to a musl
# Node). Usage: prebuilds.sh [x64] [arm64]; both by default.
#
# Both are portable builds (binding.gyp, portable_binary=1): libstdc++ linked in,
# glibc calls bound to old symbol versions (binding/glibc_compat.cc), so they need
# nothing at run time but glibc, libgcc_s and libvirt. arm64 is cross-compiled with
# Debian's multiarch packages, installed here when missing. The normal build in
# build/ is left alone: the binaries are built in build-prebuilds/, which links to
# the project's gyp file and sources (as scripts/build-asan.sh does).
set -euo pipefail
cd "$(dirname "$0")/../.."

arches=("$@")
[ ${#arches[@]} -gt 0 ] || arches=(x64 arm64)

log() { printf 'prebuilds: %s\n' "$*" >&2; }

# shellcheck source=apt.sh
source scripts/release/apt.sh

stage=build-prebuilds
mkdir -p "$stage/scripts"
ln -sfn ../binding.gyp "$stage/binding.gyp"
ln -sfn ../binding "$stage/binding"
ln -sfn ../../scripts/check-libvirt-dev.sh "$stage/scripts/check-libvirt-dev.sh"

# N-API: one binary serves every Node version from 20 on; node-gyp needs headers of
# some version, and this Node's own are at hand (npm's nodedir where it is set, so
# nothing is downloaded).
prebuildify=("$PWD/node_modules/.bin/prebuildify" --napi --strip --tag-libc --target "$(node -p process.versions.node)")
nodedir=$(npm config get nodedir 2>/dev/null || true)
if [ -n "$nodedir" ] && [ "$nodedir" != undefined ] && [ "$nodedir" != null ]; then
  export npm_config_nodedir="$nodedir"
fi
for arch in "${arches[@]}"; do
  rm -rf "$stage/prebuilds"
  case "$arch" in
    x64)
      log "linux-x64"
      (cd "$stage" && GYP_DEFINES=portable_binary=1 "${prebuildify[@]}" --arch x64)
      ;;
    arm64)
      apt_ensure_arm64
      apt_ensure g++-aarch64-linux-gnu binutils-aarch64-linux-gnu libvirt-dev:arm64 libxxhash-dev:arm64 libzstd-dev:arm64 libgnutls28-dev:arm64
      log "linux-arm64 (cross-compiled)"
      # The cross compiler looks for headers in its own sysroot first; libvirt's and
      # xxHash's (architecture-independent, from the multiarch -dev packages) after it.
      (cd "$stage" &&
        CC="aarch64-linux-gnu-gcc -idirafter /usr/include" \
          CXX="aarch64-linux-gnu-g++ -idirafter /usr/include" \
          PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig \
          GYP_DEFINES=portable_binary=1 \
          "${prebuildify[@]}" --arch arm64 --strip-bin aarch64-linux-gnu-strip)
      ;;
    *)
      log "unknown architecture '$arch' (x64 or arm64)"
      exit 1
      ;;
  esac
  rm -rf "prebuilds/linux-$arch"
  mkdir -p prebuilds
  cp -r "$stage/prebuilds/linux-$arch" prebuilds/
  for f in "prebuilds/linux-$arch"/*.node; do
    log "$f: $(stat -c %s "$f") bytes"
  done
done
