// The Connection methods that reach storage pools and streams. They live apart from
// connection.cc and are added to the Connection prototype by InstallStorageMethods,
// so the connection's own file stays about the connection.
#pragma once

#include <napi.h>

namespace lvb {

// Adds lookupStoragePoolByName, createStoragePool, defineStoragePool,
// listAllStoragePools and newStream to `connectionClass`'s prototype.
void InstallStorageMethods(Napi::Env env, Napi::Function connectionClass);

}  // namespace lvb
