#!/usr/bin/env bash
# Runs the binding's own tests (handle lifetimes, GC, close with calls in flight,
# worker threads, events, the call dispatcher, the TLS relay's threads, the pull copy's
# worker thread) with the addon from the sanitizer
# build (scripts/build-asan.sh), and fails on any AddressSanitizer or
# UndefinedBehaviorSanitizer report, even one a test survived.
#
# Leak detection is off: Node itself, V8 and libvirt's process-wide state are
# never freed at exit, and the reports would bury anything of ours.
set -euo pipefail
cd "$(dirname "$0")/.."

addon="$PWD/build-asan/build/Release/virt_backup.node"
if [ ! -f "$addon" ]; then
  echo "test:asan: $addon is missing; run npm run build:asan first" >&2
  exit 1
fi
libasan="$(gcc -print-file-name=libasan.so)"
if [ ! -f "$libasan" ]; then
  echo "test:asan: gcc does not know libasan.so ($libasan)" >&2
  exit 1
fi

tests=(
  test/libvirt/arguments.test.ts
  test/libvirt/call-dispatch.test.ts
  test/libvirt/call-policy.test.ts
  test/libvirt/checkpoints-test-driver.test.ts
  test/libvirt/close.test.ts
  test/libvirt/close-late-event.test.ts
  test/libvirt/errors.test.ts
  test/libvirt/event-loop.test.ts
  test/libvirt/events.test.ts
  test/libvirt/exit-process.test.ts
  test/libvirt/gc.test.ts
  test/libvirt/lib-version.test.ts
  test/libvirt/native-surface.test.ts
  test/libvirt/test-driver.test.ts
  test/libvirt/typed-params.test.ts
  test/libvirt/worker-events.test.ts
  test/libvirt/worker-threads.test.ts
)
# The TLS relay's threads (binding/tls_relay.cc) against qemu-nbd, and the pull copy's
# worker thread (the file writer, its memory and checksums in a worker's environment,
# ended under a copy too): a run of its own, whose test process drops the preload
# before it starts certtool, qemu-img and qemu-nbd.
relay_tests=(test/nbd/tls.test.ts test/backup/pull-copy-thread.test.ts test/backup/pull-transfer.test.ts)

# libasan intercepts the XDR functions that glibc used to have and libtirpc has
# now; preloaded alone, it finds no real function behind its interceptor and the
# first RPC of libvirt's remote driver jumps to address 0. Preloading libtirpc
# right after it gives the interceptor something to call.
tirpc="$(ldd "$addon" | awk '/libtirpc\.so/ && !found { print $3; found = 1 }')"
preload="$libasan${tirpc:+ $tirpc}"

export LIBVIRT_BACKUP_ADDON_PATH="$addon"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

# The run must test the sanitizer build, not whatever node-gyp-build would find.
LD_PRELOAD="$preload" node --import=tsx --input-type=module -e "
  import { readFileSync } from 'node:fs';
  const { nativeAddon } = await import('./src/libvirt/native.ts');
  nativeAddon();
  if (!readFileSync('/proc/self/maps', 'utf8').includes(process.env.LIBVIRT_BACKUP_ADDON_PATH)) {
    console.error('test:asan: the addon was not loaded from ' + process.env.LIBVIRT_BACKUP_ADDON_PATH);
    process.exit(1);
  }
"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
# The 100 start/destroy cycles of a real QEMU take minutes and exercise nothing
# the test-driver twin of that test does not.
LD_PRELOAD="$preload" npx ava --timeout=5m "${tests[@]}" --match='!*on the real daemon reach JS in order' 2>&1 | tee "$log" || status=$?
LD_PRELOAD="$preload" npx ava --timeout=5m --node-arguments="--import=$PWD/scripts/asan-unpreload.mjs" "${relay_tests[@]}" 2>&1 | tee -a "$log" || status=$?

if grep -qE 'ERROR: (Address|Leak)Sanitizer|UndefinedBehaviorSanitizer|runtime error:' "$log"; then
  echo "test:asan: the sanitizers reported errors (above)" >&2
  exit 1
fi
exit "$status"
