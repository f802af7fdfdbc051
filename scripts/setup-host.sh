#!/usr/bin/env bash
# Prepares a Debian 12 host to build the addon and run the tests against a real
# libvirtd: installs packages, configures the QEMU driver for a host without
# systemd, starts virtlogd + libvirtd and waits until qemu:///system answers.
# Idempotent: a second run installs nothing, rewrites nothing and returns quickly.
set -euo pipefail

URI=qemu:///system
PACKAGES=(
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients libvirt-dev pkg-config
  qemu-system-x86 qemu-utils libnbd-bin libxml2-utils python3-libvirt virtnbdbackup
  build-essential python3 gnutls-bin libxxhash-dev xxhash
  clang-format clang-tidy
)

log() { printf 'setup-host: %s\n' "$*" >&2; }

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

answers() { timeout 10 virsh -c "$URI" version >/dev/null 2>&1; }

if ! answers; then
  pgrep -x virtlogd >/dev/null || virtlogd -d
  if ! pgrep -x libvirtd >/dev/null; then
    log "starting libvirtd"
    libvirtd -d
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
