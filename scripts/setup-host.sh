#!/usr/bin/env bash
# Prepares a Debian 12 host to build the addon and run the tests against a real
# libvirtd: installs packages, configures the QEMU driver for a host without
# systemd, starts virtlogd + libvirtd and waits until qemu:///system answers, and sets
# up the remote test rig (scripts/remote-rig.sh: TLS, TCP+SASL and SSH on 127.0.0.1).
# Idempotent: a second run installs nothing, rewrites nothing and returns quickly.
set -euo pipefail

URI=qemu:///system
PACKAGES=(
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
  qemu-system-x86 qemu-utils libnbd-bin libxml2-utils python3-libvirt virtnbdbackup
  build-essential python3 gnutls-bin libgnutls28-dev libxxhash-dev xxhash libzstd-dev
  clang-format clang-tidy
  openssh-server sasl2-bin libsasl2-modules iproute2
  gdb
)

log() { printf 'setup-host: %s\n' "$*" >&2; }
# shellcheck source=remote-rig.sh
source "$(dirname "$0")/remote-rig.sh"

if [ "$(id -u)" -ne 0 ]; then
  log "must run as root (it installs packages and starts libvirtd)"
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The QEMU driver refuses to start without these accounts (normally created by
# libvirt-daemon-system, which pulls in systemd units we do not use).
getent group kvm >/dev/null || groupadd --system kvm
getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
getent passwd libvirt-qemu >/dev/null ||
  useradd --system --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin \
    --gid libvirt-qemu libvirt-qemu

mkdir -p /var/log/libvirt /var/run/libvirt /var/lib/libvirt/images

# Run QEMU as root without cgroups or a security driver: containers here have
# neither a systemd cgroup tree nor AppArmor/SELinux.
QEMU_CONF=/etc/libvirt/qemu.conf
MARK='# libvirt-backup setup-host'
if ! grep -qF "$MARK" "$QEMU_CONF" 2>/dev/null; then
  log "configuring $QEMU_CONF"
  cat >>"$QEMU_CONF" <<CONF

$MARK
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
cgroup_controllers = [ ]
CONF
fi

rig_configure

answers() { timeout 10 virsh -c "$URI" version >/dev/null 2>&1; }

# The daemon this script starts, by the pid file `libvirtd -d` writes (a libvirtd in
# another mount namespace, such as the soak's, is not it).
PID_FILE=/run/libvirtd.pid
our_libvirtd() {
  local pid
  pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = libvirtd ] && printf '%s' "$pid"
}

# Running domains survive a restart: libvirtd reconnects to their QEMU processes.
if pid=$(our_libvirtd) && { [ "$RIG_DAEMON_CHANGED" = 1 ] || ! rig_port_open 16514; }; then
  log "restarting libvirtd (pid $pid) to listen on 127.0.0.1 with its new configuration"
  kill -TERM "$pid"
  for _ in $(seq 1 300); do
    [ -d "/proc/$pid" ] || break
    sleep 0.1
  done
fi

if ! answers || ! rig_port_open 16514; then
  pgrep -x virtlogd >/dev/null || virtlogd -d
  if ! our_libvirtd >/dev/null; then
    log "starting libvirtd"
    libvirtd -d --listen
  fi
  for _ in $(seq 1 60); do
    answers && break
    sleep 0.5
  done
  if ! answers; then
    log "libvirtd does not answer on $URI; last log lines:"
    tail -n 20 /var/log/libvirt/libvirtd.log 2>/dev/null >&2 || true
    exit 1
  fi
fi

if [ -r /dev/kvm ] && [ -w /dev/kvm ] &&
  virsh -c "$URI" domcapabilities --virttype kvm >/dev/null 2>&1; then
  virt=kvm
else
  virt=qemu
fi
log "libvirtd answers on $URI (virtualization: $virt)"

rig_start_sshd
rig_check

# The real guest (Debian kernel, busybox, qemu-guest-agent) that tests boot: built from
# Debian packages once per package versions, then taken from its cache.
test_guest=$(bash "$(dirname "$0")/test-guest/build.sh")
log "test guest in $test_guest"
