#!/bin/sh
# Called by binding.gyp before it asks pkg-config for libvirt's flags, so a missing
# development package ends the build with a message that says what to install
# instead of a compiler error about a missing header.
MIN=6.0.0
if ! command -v pkg-config >/dev/null 2>&1; then
  echo "libvirt-backup: pkg-config not found. Install it (Debian/Ubuntu: apt-get install pkg-config libvirt-dev libxxhash-dev libzstd-dev libgnutls28-dev)." >&2
  exit 1
fi
for mod in libvirt libvirt-qemu; do
  if ! pkg-config --exists "$mod"; then
    echo "libvirt-backup: pkg-config cannot find $mod. Install libvirt's development files (Debian/Ubuntu: apt-get install libvirt-dev libxxhash-dev libzstd-dev; Fedora: dnf install libvirt-devel xxhash-devel libzstd-devel)." >&2
    exit 1
  fi
done
if ! pkg-config --atleast-version="$MIN" libvirt; then
  echo "libvirt-backup: libvirt $(pkg-config --modversion libvirt) is too old; checkpoints and backups need libvirt >= $MIN." >&2
  exit 1
fi
# Backup checksums are XXH3-128, compiled in from xxhash's header (no library at run time).
if ! printf '#include <xxhash.h>\n' | ${CXX:-c++} -E -x c++ - >/dev/null 2>&1; then
  echo "libvirt-backup: xxhash.h not found. Install xxHash's development files (Debian/Ubuntu: apt-get install libxxhash-dev; Fedora: dnf install xxhash-devel)." >&2
  exit 1
fi
# zstd compression of backup clusters: libzstd, linked in for the prebuilt binaries.
if ! pkg-config --exists libzstd; then
  echo "libvirt-backup: pkg-config cannot find libzstd. Install zstd's development files (Debian/Ubuntu: apt-get install libzstd-dev; Fedora: dnf install libzstd-devel)." >&2
  exit 1
fi
# NBD over TLS on the addon's own threads (binding/tls_relay.h): GnuTLS, which libvirt links too.
if ! pkg-config --exists gnutls; then
  echo "libvirt-backup: pkg-config cannot find gnutls. Install GnuTLS's development files (Debian/Ubuntu: apt-get install libgnutls28-dev; Fedora: dnf install gnutls-devel)." >&2
  exit 1
fi
echo ok
