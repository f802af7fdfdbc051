#!/usr/bin/env bash
# Everything a release needs, in order, stopping at the first failure: the one
# command to run before `npm publish` (npm run release:check).
#   1. prebuilt binaries for linux-x64 and linux-arm64 (prebuilds.sh)
#   2. their symbol versions within the floor, and the addon's libvirt floor (symbols.ts,
#      test/release/symbols.test.ts)
#   3. the packed tarball: contents, install without a compiler, smoke, TypeScript
#      consumer, source-build fallback, musl (pack-test.sh)
#   4. the x64 binary on Debian 11, glibc 2.31 and libvirt 7.0, in a chroot (debian11-smoke.sh)
#   5. the arm64 binary under qemu-aarch64 emulation (arm64-smoke.sh)
#   6. the API reference, with TypeDoc's warnings as errors (npm run docs)
set -euo pipefail
cd "$(dirname "$0")/../.."

step() { printf '\n=== release:check %s\n' "$*" >&2; }
started=$SECONDS

step "1/6 prebuilt binaries"
bash scripts/release/prebuilds.sh x64 arm64

step "2/6 symbol versions"
node --import=tsx scripts/release/symbols.ts --check --require x64,arm64
[ -f build/Release/virt_backup.node ] || npm run build:native # the test reads the source build
npx ava --concurrency=2 test/release/symbols.test.ts

step "3/6 packed tarball"
work=build-prebuilds/release-check
bash scripts/release/pack-test.sh "$work"

step "4/6 linux-x64 on Debian 11"
bash scripts/release/debian11-smoke.sh "$work/app"

step "5/6 linux-arm64 under emulation"
bash scripts/release/arm64-smoke.sh "$work/app"

step "6/6 API reference"
npm run docs

printf '\nrelease:check: all steps passed in %ss; tarball %s, file list in %s\n' \
  "$((SECONDS - started))" "$(ls "$work"/libvirt-backup-*.tgz)" "$work/tarball-files.txt" >&2
