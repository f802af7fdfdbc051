// Owners of libvirt references: std::unique_ptr with a deleter that hands the
// reference to the release thread (release_thread.h). Any domain or checkpoint
// reference may turn out to be its connection's last, and dropping that one is a
// daemon round trip; an owner can be dropped anywhere (a JS thread, libvirt's
// event thread, an unwinding exception) without caring which reference it was.
#pragma once

#include <libvirt/libvirt.h>

#include <cstdlib>
#include <memory>
#include <vector>

#include "release_thread.h"

namespace lvb {

inline void FreeReference(virConnectPtr conn) { virConnectClose(conn); }
inline void FreeReference(virDomainPtr dom) { virDomainFree(dom); }
inline void FreeReference(virDomainCheckpointPtr cp) { virDomainCheckpointFree(cp); }
inline void FreeReference(virStoragePoolPtr pool) { virStoragePoolFree(pool); }
inline void FreeReference(virStorageVolPtr vol) { virStorageVolFree(vol); }

inline void AddReference(virConnectPtr conn) { virConnectRef(conn); }
inline void AddReference(virDomainPtr dom) { virDomainRef(dom); }
inline void AddReference(virDomainCheckpointPtr cp) { virDomainCheckpointRef(cp); }
inline void AddReference(virStoragePoolPtr pool) { virStoragePoolRef(pool); }
inline void AddReference(virStorageVolPtr vol) { virStorageVolRef(vol); }

struct ReleaseOnReleaseThread {
  template <typename Object>
  void operator()(Object* handle) const {
    ReleaseInBackground([handle] { FreeReference(handle); });
  }
};

template <typename Object>
using Owned = std::unique_ptr<Object, ReleaseOnReleaseThread>;

using OwnedConnection = Owned<virConnect>;
using OwnedDomain = Owned<virDomain>;
using OwnedCheckpoint = Owned<virDomainCheckpoint>;
using OwnedStoragePool = Owned<virStoragePool>;
using OwnedStorageVolume = Owned<virStorageVol>;

// An owner of a new reference to `handle` (which stays owned by its holder).
template <typename Object>
Owned<Object> ShareReference(Object* handle) {
  if (handle != nullptr) AddReference(handle);
  return Owned<Object>(handle);
}

// Drops the reference on this thread, now. Only for a call thread (where a
// daemon round trip is fine and saves the release thread a wake-up per call),
// or for a reference known not to be its connection's last.
template <typename Object>
void ReleaseHere(Owned<Object>& owner) {
  if (Object* handle = owner.release()) FreeReference(handle);
}

// Owners of the handles in a list libvirt returned; frees the array itself.
template <typename Object>
std::vector<Owned<Object>> AdoptList(Object** list, int count) {
  std::vector<Owned<Object>> owners;
  owners.reserve(count > 0 ? static_cast<size_t>(count) : 0);
  for (int i = 0; i < count; i++) owners.emplace_back(list[i]);
  free(list);
  return owners;
}

}  // namespace lvb
