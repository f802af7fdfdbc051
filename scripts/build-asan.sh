#!/usr/bin/env bash
# Builds the addon with AddressSanitizer and UndefinedBehaviorSanitizer into
# build-asan/build/Release/virt_backup.node, for `npm run test:asan`. The normal
# build in build/ is left alone: node-gyp builds next to the gyp file it is
# given, so build-asan/ holds links to the project's gyp file and sources.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=build-asan
mkdir -p "$dir/scripts"
ln -sfn ../binding.gyp "$dir/binding.gyp"
ln -sfn ../binding "$dir/binding"
ln -sfn ../../scripts/check-libvirt-dev.sh "$dir/scripts/check-libvirt-dev.sh"

# -fno-sanitize-recover: undefined behaviour aborts like a memory error does.
sanitize="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
CFLAGS="$sanitize" CXXFLAGS="$sanitize" LDFLAGS="-fsanitize=address,undefined" \
  npx node-gyp rebuild --jobs max --directory "$dir"
echo "sanitizer build: $dir/build/Release/virt_backup.node"
