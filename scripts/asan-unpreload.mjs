// Loaded into the test process of the TLS tests under the sanitizers
// (scripts/test-asan.sh): that process keeps the libasan it started with, but the
// programs it starts (certtool, qemu-img, qemu-nbd) must not inherit the preload.
delete process.env.LD_PRELOAD;
