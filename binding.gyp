{
  "targets": [
    {
      "target_name": "virt_backup",
      "sources": [
        "binding/addon.cc",
        "binding/event_loop.cc",
        "binding/call_dispatcher.cc",
        "binding/call_policy_probe.cc",
        "binding/spin_governor_probe.cc",
        "binding/errors.cc",
        "binding/release_thread.cc",
        "binding/handles.cc",
        "binding/connection.cc",
        "binding/connection_open.cc",
        "binding/domain.cc",
        "binding/checkpoint.cc",
        "binding/storage_connection.cc",
        "binding/storage_pool.cc",
        "binding/storage_volume.cc",
        "binding/stream.cc",
        "binding/event_channel.cc",
        "binding/typed_params.cc",
        "binding/file_lock.cc",
        "binding/exit_watchdog.cc",
        "binding/file_writer.cc",
        "binding/huge_page_memory.cc",
        "binding/xxh128.cc",
        "binding/zstd_clusters.cc",
        "binding/tls_relay.cc"
      ],
      "variables": {
        "libvirt_checked": "<!(sh scripts/check-libvirt-dev.sh)",
        "portable_binary%": 0
      },
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_CPP_EXCEPTIONS_ALL",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags": ["<!@(pkg-config --cflags libvirt libvirt-qemu libzstd gnutls)"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra", "-Wno-unused-parameter", "<!@(pkg-config --cflags libvirt libvirt-qemu libzstd gnutls)"],
      "libraries": ["<!@(pkg-config --libs libvirt libvirt-qemu gnutls)"],
      "conditions": [
        ["portable_binary==1", {
          "sources": ["binding/glibc_compat.cc"],
          "ldflags": ["-static-libstdc++", "-Wl,--exclude-libs,ALL", "-Wl,--no-as-needed", "-l:libpthread.so.0", "-l:libdl.so.2", "-Wl,--as-needed"],
          "libraries": ["-l:libzstd.a"]
        }, {
          "libraries": ["<!@(pkg-config --libs libzstd)"]
        }]
      ]
    }
  ]
}
