#!/usr/bin/env bash
# Format check (clang-format) and static analysis (clang-tidy, .clang-tidy's checks) of
# the addon's C++. `--fix` rewrites the files with clang-format instead of checking.
set -euo pipefail
cd "$(dirname "$0")/.."

sources=(binding/*.cc binding/*.h)
if [ "${1:-}" = "--fix" ]; then
  clang-format -i "${sources[@]}"
  exit 0
fi

unformatted=()
for file in "${sources[@]}"; do
  clang-format --dry-run --Werror "$file" >/dev/null 2>&1 || unformatted+=("$file")
done
if [ ${#unformatted[@]} -gt 0 ]; then
  echo "lint-native: not formatted as .clang-format says (run scripts/lint-native.sh --fix): ${unformatted[*]}" >&2
  exit 1
fi

# The flags binding.gyp compiles with, so clang-tidy sees the code as the build does.
nodedir="$(npm config get nodedir 2>/dev/null || true)"
[ -d "$nodedir/include/node" ] || nodedir="$(dirname "$(dirname "$(command -v node)")")"
flags=(
  -std=c++17 -x c++
  -I"$nodedir/include/node"
  -I"$(node -p "require('node-addon-api').include_dir")"
  $(pkg-config --cflags libvirt libvirt-qemu libzstd)
  -DNAPI_VERSION=8 -DNAPI_CPP_EXCEPTIONS -DNODE_ADDON_API_CPP_EXCEPTIONS_ALL
  -DNODE_ADDON_API_DISABLE_DEPRECATED -DNODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS
)
# One file per process, two at a time: the whole addon takes minutes in one process.
printf '%s\0' binding/*.cc | xargs -0 -P "$(nproc)" -I{} clang-tidy --quiet {} -- "${flags[@]}" 2>&1 |
  grep -v '^[0-9]* warnings\? generated\.$' > "${TMPDIR:-/tmp}/lint-native.$$" || true
if grep -q 'error:\|warning:' "${TMPDIR:-/tmp}/lint-native.$$"; then
  cat "${TMPDIR:-/tmp}/lint-native.$$" >&2
  rm -f "${TMPDIR:-/tmp}/lint-native.$$"
  exit 1
fi
rm -f "${TMPDIR:-/tmp}/lint-native.$$"
