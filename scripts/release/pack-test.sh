#!/usr/bin/env bash
# The package as users get it: packs the project (from a copy of its files, as a
# fresh clone would, so nothing stale in lib/ is shipped), checks what the tarball
# holds, installs it into a new project with a PATH that has no compiler and no
# make, and runs a user's first program there (scripts/release/consumer/): the root
# API on test:///default, the /xml, /nbd and /backup entry points, require() from
# CommonJS, the CLI, and a strict TypeScript compile over all four entry points.
# Then the ways install can go wrong: no matching prebuilt binary without a
# toolchain, without libvirt's headers, and a musl Node.
#
# Usage: pack-test.sh [WORKDIR]   (default: a temporary directory, removed after;
# given one, it is kept, with the tarball in it and the installed project in app/)
# Needs prebuilds/linux-x64 (npm run prebuilds -- x64).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

log() { printf 'pack-test: %s\n' "$*" >&2; }
fail() {
  log "FAILED: $*"
  exit 1
}

if [ $# -gt 0 ]; then
  work=$1
  rm -rf "$work"
  mkdir -p "$work"
  work=$(cd "$work" && pwd)
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
ls prebuilds/linux-x64/*.node >/dev/null 2>&1 || fail "no prebuilds/linux-x64 binary (npm run prebuilds -- x64)"

# 1. Pack from a copy holding what git holds (committed or not, nothing ignored)
#    plus the prebuilt binaries; prepack builds lib/ there from scratch.
log "packing from a copy of the project"
mkdir -p "$work/source"
{
  git ls-files -z --cached --others --exclude-standard
  find prebuilds -type f -print0
} | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
  tar --null -T - -cf - | tar -xf - -C "$work/source"
ln -s "$root/node_modules" "$work/source/node_modules"
(cd "$work/source" && npm pack --silent --pack-destination "$work" >"$work/pack.out" 2>"$work/pack.err") ||
  {
    cat "$work/pack.err" >&2
    fail "npm pack"
  }
tarball="$work/$(tail -n 1 "$work/pack.out")"
[ -f "$tarball" ] || fail "npm pack made no tarball"

# 2. What the tarball holds.
tar -tzf "$tarball" | sed 's|^package/||' | sort >"$work/files.txt"
log "$(basename "$tarball"): $(stat -c %s "$tarball") bytes packed, $(wc -l <"$work/files.txt") files, $(tar -xzOf "$tarball" | wc -c) bytes unpacked"
for required in package.json README.md CHANGELOG.md LICENSE binding.gyp lib/index.js lib/index.d.ts \
  lib/xml/index.js lib/nbd/index.js lib/backup/index.js lib/cli/main.js prebuilds/linux-x64/node.glibc.node \
  binding/addon.cc scripts/check-libvirt-dev.sh scripts/check-build-tools.sh; do
  grep -qxF "$required" "$work/files.txt" || fail "the tarball lacks $required"
done
unwanted=$(grep -E '\.map$|\.test\.|(^|/)test/|(^|/)bench/|^src/|^build/|\.tsbuildinfo$|^scripts/(release|bench|soak)/' "$work/files.txt" || true)
[ -z "$unwanted" ] || fail "the tarball holds files users do not need:"$'\n'"$unwanted"
cp "$work/files.txt" "$work/tarball-files.txt"

# 3. A PATH with everything of the machine's but compilers, make and Python, so
#    that a source build cannot happen behind our back.
nocc="$work/nocc-bin"
mkdir -p "$nocc"
for dir in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
  [ -d "$dir" ] || continue
  for tool in "$dir"/*; do
    name=$(basename "$tool")
    case "$name" in
      cc | c++ | gcc* | g++* | cpp* | clang* | *-gcc* | *-g++* | *-cc | *-c++ | make | gmake | python* | ld | ld.* | as) continue ;;
    esac
    [ -e "$nocc/$name" ] || ln -s "$tool" "$nocc/$name"
  done
done
nocc_env=(env -u CC -u CXX -u npm_config_nodedir "PATH=$nocc")
"${nocc_env[@]}" sh -c 'command -v cc || command -v c++ || command -v g++ || command -v make' >/dev/null &&
  fail "the compiler-free PATH still has a compiler or make"

# A user's project that approved the package's install script (npm >= 11 warns about
# unapproved ones; allowScripts matches a tarball by its file: spec).
new_project() { # dir, tarball
  rm -rf "$1"
  mkdir -p "$1"
  printf '{ "name": "consumer", "private": true, "type": "module", "allowScripts": { "file:%s": true } }\n' "$2" >"$1/package.json"
}

# 4. Install into a new project without a compiler, and use it. The install script
#    runs and must find the prebuilt binary rather than compile.
app="$work/app"
new_project "$app" "$tarball"
cp scripts/release/consumer/* "$app/"
log "npm install of the tarball with no compiler on PATH"
(cd "$app" && "${nocc_env[@]}" npm install --no-audit --no-fund --foreground-scripts "$tarball" 2>&1) | tee "$work/install.log" >&2 ||
  fail "npm install of the tarball"
[ ! -e "$app/node_modules/libvirt-backup/build" ] || fail "install compiled the addon instead of using the prebuilt binary"
(cd "$app" && "${nocc_env[@]}" node smoke.mjs) || fail "smoke.mjs"
(cd "$app" && "${nocc_env[@]}" node --no-warnings require.cjs) || fail "require() from CommonJS"
version=$(node -p "require('$root/package.json').version")
(cd "$app" && "${nocc_env[@]}" npx --no-install libvirt-backup --version) | grep -qx "libvirt-backup $version" ||
  fail "libvirt-backup --version does not print libvirt-backup $version"
(cd "$app" && "${nocc_env[@]}" npx --no-install libvirt-backup --help) | grep -q 'backup' ||
  fail "libvirt-backup --help"
log "ok CLI --version ($version) and --help"

grep -q 'not yet covered by allowScripts' "$work/install.log" && fail "npm did not take the project's approval of the install script"

# A user who skips install scripts (--ignore-scripts, or a denied or unapproved script
# under npm's strict-allow-scripts): the prebuilt binary is found when the addon is
# first loaded.
plain="$work/app-ignore-scripts"
new_project "$plain" "$tarball"
cp scripts/release/consumer/smoke.mjs "$plain/"
(cd "$plain" && "${nocc_env[@]}" npm install --no-audit --no-fund --ignore-scripts "$tarball" >"$work/install-ignore-scripts.log" 2>&1) ||
  fail "npm install --ignore-scripts"
(cd "$plain" && "${nocc_env[@]}" node smoke.mjs >/dev/null) || fail "smoke.mjs after an install whose script did not run"
log "ok without its install script (--ignore-scripts)"

log "TypeScript consumer (strict, module nodenext) over the four entry points"
(cd "$app" && npm install --no-audit --no-fund --silent "typescript@$(node -p "require('$root/node_modules/typescript/package.json').version")" "@types/node@^20" >/dev/null 2>&1) ||
  fail "installing typescript into the consumer project"
(cd "$app" && npx --no-install tsc -p tsconfig.json) || fail "the TypeScript consumer does not compile"
log "ok TypeScript consumer compiles"

# 5. No matching prebuilt binary: install falls back to a source build, and says
#    what is missing instead of failing inside node-gyp.
mkdir -p "$work/bare"
tar -xzf "$tarball" -C "$work/bare"
rm -rf "$work/bare/package/prebuilds"
bare="$work/bare-without-prebuilds.tgz"
tar -czf "$bare" -C "$work/bare" package

expect_install_failure() { # name, message pattern, env...
  local name=$1 pattern=$2
  shift 2
  new_project "$work/$name" "$bare"
  if (cd "$work/$name" && "$@" npm install --no-audit --no-fund "$bare" >"$work/$name.log" 2>&1); then
    fail "$name: install without a prebuilt binary succeeded"
  fi
  grep -E "$pattern" "$work/$name.log" >&2 || {
    cat "$work/$name.log" >&2
    fail "$name: no clear message"
  }
}
expect_install_failure no-toolchain 'libvirt-backup: no prebuilt binary matches.*needs:' "${nocc_env[@]}"
expect_install_failure no-libvirt-dev 'libvirt-backup: pkg-config cannot find libvirt' env PKG_CONFIG_LIBDIR=/nonexistent
log "ok source-build fallback names what is missing"

# 6. musl: node-gyp-build must not hand the glibc binary to a musl Node.
(cd "$app" && LIBC=musl node --input-type=module -e "
  const { connect } = await import('libvirt-backup');
  try { await connect('test:///default'); console.error('a glibc binary was loaded for musl'); process.exit(1); }
  catch (err) { if (!/musl/.test(err.message)) { console.error(err); process.exit(1); } console.error('pack-test: ok musl: ' + err.message); }
") || fail "musl"

log "ok: $(basename "$tarball")"
