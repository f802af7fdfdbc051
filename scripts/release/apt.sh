# shellcheck shell=bash
# Sourced by the release scripts: installs Debian packages they need when missing
# (idempotent; nothing is installed on a second run), and the arm64 architecture for
# the cross build and the emulated smoke test.

apt_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

apt_ensure() {
  local missing=() p
  for p in "$@"; do apt_installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  if [ "$(id -u)" -ne 0 ]; then
    printf 'release: missing packages: %s (install them as root)\n' "${missing[*]}" >&2
    return 1
  fi
  printf 'release: installing %s\n' "${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

apt_ensure_arm64() {
  dpkg --print-foreign-architectures | grep -qx arm64 && return 0
  if [ "$(id -u)" -ne 0 ]; then
    printf 'release: dpkg has no arm64 architecture; as root: dpkg --add-architecture arm64\n' >&2
    return 1
  fi
  printf 'release: adding dpkg architecture arm64\n' >&2
  dpkg --add-architecture arm64
  apt-get update -qq
}
