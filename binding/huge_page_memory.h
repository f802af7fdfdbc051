// Memory for buffers that go to the disk with O_DIRECT, mapped on 2 MiB boundaries and
// offered to the kernel for transparent huge pages. A direct write's request carries one
// segment per physically contiguous run of its memory: from 4 KiB pages a disk request
// holds at most max_segments pages (254 on virtio-blk, about 1 MiB), from a huge page up
// to its whole 2 MiB, so the same bytes reach the disk in fewer, larger requests.
#pragma once

#include <napi.h>

namespace lvb {

// hugePageMemory(bytes): an ArrayBuffer of `bytes` (rounded up to 2 MiB) starting on a
// 2 MiB boundary, unmapped when the ArrayBuffer is collected. Where the kernel has no
// transparent huge pages it is still page-aligned memory, in 4 KiB pages.
Napi::Value HugePageMemory(const Napi::CallbackInfo& info);

}  // namespace lvb
