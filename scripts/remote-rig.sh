# Sourced by setup-host.sh: makes this host reachable the way a remote hypervisor is,
# on 127.0.0.1 only, so that the remote code paths can be tested for real:
#   qemu+tls://127.0.0.1/system   libvirtd's TLS listener, certificates in libvirt's
#                                 default PKI paths (made here with certtool)
#   qemu+tcp://127.0.0.1/system   libvirtd's TCP listener, SASL (DIGEST-MD5) with a
#                                 test user whose password is in $RIG_SASL_CREDENTIALS
#   qemu+ssh://root@127.0.0.1/system, qemu+libssh://..., qemu+libssh2://...?keyfile=...
#                                 sshd, root's default key (libssh2 needs keyfile=)
# and QEMU's NBD exports of pull backups over TLS (qemu.conf backup_tls_x509_*).
# Files that exist are never overwritten, except the ones this script wrote itself
# (they carry its mark), so a host with its own PKI or SASL setup keeps it.
#
# rig_configure sets RIG_DAEMON_CHANGED=1 when libvirtd must be restarted to read what
# changed; rig_start_sshd and rig_check run once libvirtd listens.

RIG_MARK='libvirt-backup setup-host'
RIG_CA_DIR=/etc/pki/CA
RIG_LIBVIRT_PKI=/etc/pki/libvirt
RIG_QEMU_PKI=/etc/pki/qemu
RIG_SASL_CONF=/etc/sasl2/libvirt.conf
RIG_SASL_DB=/etc/libvirt/passwd.db
RIG_SASL_USER=lvbtest
RIG_SECRETS_DIR=/etc/libvirt-backup-tests
RIG_SASL_CREDENTIALS=$RIG_SECRETS_DIR/sasl.json
RIG_SSH_KEY=/root/.ssh/id_ed25519
RIG_DAEMON_CHANGED=0

# Writes stdin to $2 with mode $1 unless the file already holds exactly that; returns 0
# when it wrote.
rig_write() {
  local mode=$1 path=$2 tmp
  tmp=$(mktemp)
  cat >"$tmp"
  if [ -f "$path" ] && cmp -s "$tmp" "$path"; then
    rm -f "$tmp"
    return 1
  fi
  install -D -m "$mode" "$tmp" "$path"
  rm -f "$tmp"
  log "wrote $path"
  return 0
}

rig_template() {
  local file
  file=$(mktemp)
  cat >"$file"
  printf '%s' "$file"
}

# A private key and a certificate signed by the rig's CA, for a server or a client.
rig_issue() {
  local role=$1 cert=$2 key=$3 template
  template=$(rig_template <<INFO
cn = $(hostname)
organization = libvirt-backup test rig
dns_name = localhost
dns_name = $(hostname)
ip_address = 127.0.0.1
ip_address = ::1
$role
encryption_key
signing_key
expiration_days = 3650
INFO
)
  install -d -m 0700 "$(dirname "$key")"
  (umask 077 && certtool --generate-privkey --outfile "$key" >/dev/null 2>&1)
  certtool --generate-certificate --load-privkey "$key" --load-ca-certificate "$RIG_CA_DIR/cacert.pem" \
    --load-ca-privkey "$RIG_CA_DIR/private/cakey.pem" --template "$template" --outfile "$cert" >/dev/null 2>&1
  chmod 0644 "$cert"
  rm -f "$template"
  log "issued $cert"
}

rig_pki() {
  if [ ! -f "$RIG_CA_DIR/cacert.pem" ]; then
    local template
    template=$(rig_template <<INFO
cn = libvirt-backup test CA on $(hostname)
ca
cert_signing_key
expiration_days = 3650
INFO
)
    install -d -m 0755 "$RIG_CA_DIR"
    install -d -m 0700 "$RIG_CA_DIR/private"
    (umask 077 && certtool --generate-privkey --outfile "$RIG_CA_DIR/private/cakey.pem" >/dev/null 2>&1)
    certtool --generate-self-signed --load-privkey "$RIG_CA_DIR/private/cakey.pem" --template "$template" \
      --outfile "$RIG_CA_DIR/cacert.pem" >/dev/null 2>&1
    chmod 0644 "$RIG_CA_DIR/cacert.pem"
    rm -f "$template"
    log "made the CA $RIG_CA_DIR/cacert.pem"
  fi
  install -d -m 0755 "$RIG_LIBVIRT_PKI"
  if [ ! -f "$RIG_LIBVIRT_PKI/servercert.pem" ]; then
    [ -f "$RIG_CA_DIR/private/cakey.pem" ] || { log "$RIG_LIBVIRT_PKI/servercert.pem is missing and the CA key is not here to issue it"; exit 1; }
    rig_issue tls_www_server "$RIG_LIBVIRT_PKI/servercert.pem" "$RIG_LIBVIRT_PKI/private/serverkey.pem"
    RIG_DAEMON_CHANGED=1
  fi
  if [ ! -f "$RIG_LIBVIRT_PKI/clientcert.pem" ]; then
    [ -f "$RIG_CA_DIR/private/cakey.pem" ] || { log "$RIG_LIBVIRT_PKI/clientcert.pem is missing and the CA key is not here to issue it"; exit 1; }
    rig_issue tls_www_client "$RIG_LIBVIRT_PKI/clientcert.pem" "$RIG_LIBVIRT_PKI/private/clientkey.pem"
  fi
  # QEMU wants its own file names in one directory; the NBD server uses libvirtd's
  # server identity and checks clients against the same CA.
  if [ ! -f "$RIG_QEMU_PKI/server-cert.pem" ]; then
    install -d -m 0755 "$RIG_QEMU_PKI"
    install -m 0644 "$RIG_CA_DIR/cacert.pem" "$RIG_QEMU_PKI/ca-cert.pem"
    install -m 0644 "$RIG_LIBVIRT_PKI/servercert.pem" "$RIG_QEMU_PKI/server-cert.pem"
    install -m 0600 "$RIG_LIBVIRT_PKI/private/serverkey.pem" "$RIG_QEMU_PKI/server-key.pem"
    log "installed QEMU's TLS identity in $RIG_QEMU_PKI"
  fi
  # Without this file QEMU generates new Diffie-Hellman parameters each time it starts a
  # TLS NBD server: 0.15 to 0.9 s added to every backup job's start here. GnuTLS's
  # published RFC 7919 group is what an administrator would install.
  if [ ! -f "$RIG_QEMU_PKI/dh-params.pem" ]; then
    certtool --get-dh-params --outfile "$RIG_QEMU_PKI/dh-params.pem" >/dev/null 2>&1
    chmod 0644 "$RIG_QEMU_PKI/dh-params.pem"
    log "installed Diffie-Hellman parameters in $RIG_QEMU_PKI"
  fi
  # A client identity in the layout of QEMU's directory and of libnbd's default one, for
  # NBD clients other than ours (nbdinfo nbds://..., virtnbdbackup --tls) to present to
  # an export that checks its clients.
  local dir
  for dir in "$RIG_QEMU_PKI" /etc/pki/libnbd; do
    if [ ! -f "$dir/client-cert.pem" ]; then
      install -d -m 0755 "$dir"
      [ -f "$dir/ca-cert.pem" ] || install -m 0644 "$RIG_CA_DIR/cacert.pem" "$dir/ca-cert.pem"
      install -m 0644 "$RIG_LIBVIRT_PKI/clientcert.pem" "$dir/client-cert.pem"
      install -m 0600 "$RIG_LIBVIRT_PKI/private/clientkey.pem" "$dir/client-key.pem"
      log "installed a client identity in $dir"
    fi
  done
}

# A block appended once to a libvirt config file, found again by its mark.
rig_append_block() {
  local path=$1 title=$2
  if grep -qF "# $RIG_MARK: $title" "$path" 2>/dev/null; then
    cat >/dev/null
    return 1
  fi
  { printf '\n# %s: %s\n' "$RIG_MARK" "$title"; cat; } >>"$path"
  log "configured $path ($title)"
  return 0
}

rig_daemon_config() {
  if rig_append_block /etc/libvirt/libvirtd.conf 'remote listeners on 127.0.0.1' <<'CONF'; then RIG_DAEMON_CHANGED=1; fi
listen_tls = 1
listen_tcp = 1
listen_addr = "127.0.0.1"
auth_tls = "none"
auth_tcp = "sasl"
CONF
  if rig_append_block /etc/libvirt/qemu.conf 'NBD over TLS for pull backups' <<CONF; then RIG_DAEMON_CHANGED=1; fi
backup_tls_x509_cert_dir = "$RIG_QEMU_PKI"
backup_tls_x509_verify = 1
CONF
  # DIGEST-MD5 rather than SCRAM: libvirtd refuses a SASL mechanism without a
  # security layer on a plain TCP socket, and DIGEST-MD5 gives one.
  if [ ! -f "$RIG_SASL_CONF" ] || grep -qF "$RIG_MARK" "$RIG_SASL_CONF"; then
    if rig_write 0644 "$RIG_SASL_CONF" <<CONF; then RIG_DAEMON_CHANGED=1; fi
# $RIG_MARK
mech_list: digest-md5
sasldb_path: $RIG_SASL_DB
CONF
  fi
}

rig_sasl_user() {
  if [ -f "$RIG_SASL_CREDENTIALS" ] && sasldblistusers2 -f "$RIG_SASL_DB" 2>/dev/null | grep -q "^$RIG_SASL_USER@"; then
    return
  fi
  local password
  password=$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 24)
  printf '%s' "$password" | saslpasswd2 -p -c -a libvirt -f "$RIG_SASL_DB" "$RIG_SASL_USER"
  chmod 0600 "$RIG_SASL_DB"
  install -d -m 0700 "$RIG_SECRETS_DIR"
  rig_write 0600 "$RIG_SASL_CREDENTIALS" <<JSON || true
{ "username": "$RIG_SASL_USER", "password": "$password" }
JSON
}

rig_ssh() {
  install -d -m 0700 /root/.ssh
  if [ ! -f "$RIG_SSH_KEY" ]; then
    ssh-keygen -q -t ed25519 -N '' -C "root@$(hostname) libvirt-backup test rig" -f "$RIG_SSH_KEY"
    log "made $RIG_SSH_KEY"
  fi
  local pub
  pub=$(cat "$RIG_SSH_KEY.pub")
  if ! grep -qxF "$pub" /root/.ssh/authorized_keys 2>/dev/null; then
    printf '%s\n' "$pub" >>/root/.ssh/authorized_keys
    chmod 0600 /root/.ssh/authorized_keys
    log "authorized $RIG_SSH_KEY.pub for root"
  fi
  { [ -f /etc/ssh/ssh_host_ed25519_key ] && [ -f /etc/ssh/ssh_host_ecdsa_key ]; } || ssh-keygen -A
  # Known in advance, so that no transport ever has a host key to ask about: OpenSSH's
  # file for qemu+ssh, libvirt's own for qemu+libssh and qemu+libssh2 (libssh2 reads
  # only some key types, and only in the [host]:port form).
  if ! ssh-keygen -F 127.0.0.1 -f /root/.ssh/known_hosts >/dev/null 2>&1; then
    printf '127.0.0.1 %s\n' "$(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)" >>/root/.ssh/known_hosts
    log "added 127.0.0.1 to /root/.ssh/known_hosts"
  fi
  local libvirt_known=/root/.config/libvirt/known_hosts
  if ! grep -qF '[127.0.0.1]:22 ' "$libvirt_known" 2>/dev/null; then
    install -d -m 0700 "$(dirname "$libvirt_known")"
    printf '[127.0.0.1]:22 %s\n' "$(cut -d' ' -f1,2 /etc/ssh/ssh_host_ecdsa_key.pub)" >>"$libvirt_known"
    log "added 127.0.0.1 to $libvirt_known"
  fi
}

rig_configure() {
  rig_pki
  rig_daemon_config
  rig_sasl_user
  rig_ssh
}

rig_port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# An sshd of our own on 127.0.0.1 when nothing answers on port 22 (a host with its own
# sshd keeps it: the key above is authorized for root either way).
rig_start_sshd() {
  rig_port_open 22 && return
  mkdir -p /run/sshd
  /usr/sbin/sshd -o ListenAddress=127.0.0.1 -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no
  for _ in $(seq 1 50); do
    rig_port_open 22 && break
    sleep 0.1
  done
  log "started sshd on 127.0.0.1:22"
}

# What the README promises: plain URIs answer, with nothing but the default paths.
rig_check() {
  local uri
  for uri in qemu+tls://127.0.0.1/system qemu+ssh://root@127.0.0.1/system?no_tty=1 qemu+libssh://root@127.0.0.1/system; do
    if ! timeout 20 virsh -c "$uri" version >/dev/null 2>&1; then
      log "the remote test rig does not answer on $uri:"
      timeout 20 virsh -c "$uri" version >&2 || true
      exit 1
    fi
  done
  log "remote test rig: qemu+tls, qemu+tcp (SASL user $RIG_SASL_USER, password in $RIG_SASL_CREDENTIALS), qemu+ssh on 127.0.0.1"
}
