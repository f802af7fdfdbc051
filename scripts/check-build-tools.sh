#!/bin/sh
# Run by `npm install` (node-gyp-build) only when no prebuilt binary loads here and
# the addon must be compiled: names everything a source build lacks in one message,
# before node-gyp fails on the first of them (Python, make or a compiler) with an
# error of its own. libvirt's and xxHash's headers are checked by
# check-libvirt-dev.sh, which binding.gyp also runs.
missing=""
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
command -v make >/dev/null 2>&1 || missing="$missing make"
command -v "${CXX:-c++}" >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || missing="$missing a C++ compiler"
command -v pkg-config >/dev/null 2>&1 || missing="$missing pkg-config"
libc=glibc
if [ -e /etc/alpine-release ] || ldd --version 2>&1 | grep -qi musl; then libc=musl; fi
if [ -n "$missing" ]; then
  {
    echo "libvirt-backup: no prebuilt binary matches this system (linux-$(uname -m), $libc), and building the addon from source needs:$missing."
    if [ "$libc" = musl ]; then
      echo "  The prebuilt binaries are for glibc; on musl (Alpine) build from source: apk add build-base python3 pkgconf libvirt-dev xxhash-dev zstd-dev"
    else
      echo "  Debian/Ubuntu: apt-get install g++ make python3 pkg-config libvirt-dev libxxhash-dev libzstd-dev"
      echo "  Fedora/RHEL:   dnf install gcc-c++ make python3 pkgconf-pkg-config libvirt-devel xxhash-devel libzstd-devel"
    fi
    echo "  Then run the install again."
  } >&2
  exit 1
fi
exec sh "$(dirname "$0")/check-libvirt-dev.sh" >/dev/null
