#!/usr/bin/env bash
# The package's test phase the way `nix build .#labnode` (and so `nix flake check` and every
# system build) runs it, reproduced without Nix's sandbox:
# - only the package's source fileset (read from agents/package.nix by
#   tests/nix/package-info.nix, git-tracked files only, as a flake's source is);
# - pkg-config sees only the build inputs package.nix lists, and nixpkgs' zfs `.pc` files
#   (its libzfs.pc and libzfs_core.pc name libcrypto, zlib, blkid, uuid and libtirpc in
#   Requires.private, where Debian's leave the field empty);
# - the test binaries built with the check profile (release), then each one run from its
#   crate's directory in a network namespace of its own with only loopback up, as an
#   unprivileged uid, with `env -i`, HOME=/homeless-shelter, a private TMPDIR and a PATH of
#   the stdenv tools and the package's nativeBuildInputs only (no ip, nix, systemd, curl).
# TCP congestion controls are limited to net.ipv4.tcp_allowed_congestion_control, as for any
# unprivileged process (`reno bbr` on a host whose default is bbr, like the c220g5).
# timeout: 1800
. "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ "$(id -u)" = 0 ] || fail "needs root (a network namespace and a uid to drop to)"
for tool in nix-instantiate jq pkg-config unshare setpriv ip cargo git; do
  command -v "$tool" >/dev/null || fail "missing $tool"
done
CACHE=${LABNODE_CACHE:-/var/cache/labnode}
WORK="$CACHE/nix-sandbox"
BUILD_UID=30001 # nixbld1's uid on NixOS
mkdir -p "$WORK"

info=$(cd "$ROOT" && nix-instantiate --eval --strict --json tests/nix/package-info.nix 2>"$T/eval.err") ||
  fail "cannot read agents/package.nix: $(cat "$T/eval.err")"
[ "$(jq -r .doCheck <<<"$info")" = true ] || fail "agents/package.nix turns its tests off (doCheck)"
src_root=$(jq -r .root <<<"$info")
profile=$(jq -r .checkType <<<"$info")
subdir=$(jq -r '.buildAndTestSubdir // "."' <<<"$info")
mapfile -t test_flags < <(jq -r '.cargoTestFlags[]' <<<"$info")
mapfile -t check_flags < <(jq -r '.checkFlags[]' <<<"$info")
mapfile -t build_inputs < <(jq -r '.buildInputs[]' <<<"$info")
mapfile -t native_inputs < <(jq -r '.nativeBuildInputs[]' <<<"$info")
note "package.nix: source root $(realpath --relative-to="$ROOT" "$src_root"), build inputs: ${build_inputs[*]}"

# 1. The source: the fileset's git-tracked files. A file whose content is unchanged since the
#    last run keeps its copy (and its time stamp), so cargo's incremental build stays warm;
#    a changed one is copied anew (now newer than what was built from the old one).
src="$WORK/source"
mkdir -p "$src"
prefix=$(realpath --relative-to="$ROOT" "$src_root")/
[ "$prefix" = ./ ] && prefix=
n=0
: >"$T/wanted"
while IFS= read -r entry; do
  while IFS= read -r f; do
    dest="$src/${f#"$prefix"}"
    echo "$dest" >>"$T/wanted"
    if ! cmp -s "$ROOT/$f" "$dest"; then
      mkdir -p "$(dirname "$dest")"
      cp "$ROOT/$f" "$dest"
    fi
    chmod --reference="$ROOT/$f" "$dest"
    n=$((n + 1))
  done < <(cd "$ROOT" && git ls-files --cached -- "$(realpath --relative-to="$ROOT" "$entry")")
done < <(jq -r '.files[]' <<<"$info")
# Whatever is not in the fileset (any more) goes.
find "$src" -type f | sort >"$T/present"
sort -o "$T/wanted" "$T/wanted"
comm -23 "$T/present" "$T/wanted" | xargs -r rm -f
find "$src" -mindepth 1 -type d -empty -delete
[ "$n" -gt 0 ] || fail "the fileset holds no tracked file"
note "source: $n files of the fileset"

# 2. pkg-config as nixpkgs gives it: one directory per build input, holding the .pc files
#    that package provides; nothing else on the search path.
pcdirs=()
pc_of() {
  case "$1" in
    zfs) echo "libzfs libzfs_core" ;;
    openssl) echo "libcrypto libssl openssl" ;;
    zlib) echo "zlib" ;;
    libuuid | util-linux | util-linuxMinimal) echo "uuid blkid" ;;
    libtirpc) echo "libtirpc" ;;
    *) echo "" ;;
  esac
}
system_pc() { pkg-config --variable=pcfiledir "$1" 2>/dev/null | sed "s|\$|/$1.pc|"; }
for input in "${build_inputs[@]}"; do
  d="$T/pkgconfig/$input"
  mkdir -p "$d"
  for pc in $(pc_of "$input"); do
    file=$(system_pc "$pc")
    [ -f "$file" ] || fail "no $pc.pc on this machine to stand in for nixpkgs' $input"
    case "$pc" in
      libzfs) sed 's/^Requires.private:.*/Requires.private: libcrypto zlib/' "$file" >"$d/$pc.pc" ;;
      libzfs_core) sed 's/^Requires.private:.*/Requires.private: blkid uuid libtirpc zlib/' "$file" >"$d/$pc.pc" ;;
      *) ln -s "$file" "$d/$pc.pc" ;;
    esac
  done
  pcdirs+=("$d")
done
pc_path=$(
  IFS=:
  echo "${pcdirs[*]}"
)

# 3. Build the test binaries as the check phase does.
target="$WORK/target"
note "building the tests ($profile profile, cargo test ${test_flags[*]})"
(cd "$src/$subdir" && PKG_CONFIG_PATH="$pc_path" PKG_CONFIG_LIBDIR="$pc_path" CARGO_TARGET_DIR="$target" \
  cargo test --profile "$profile" --locked --offline "${test_flags[@]}" --no-run --message-format=json \
  >"$T/build.json" 2>"$T/build.log") || {
  grep -E '^(error|warning: labnode|  --- stderr)|labnode-zfs-sys|not found' "$T/build.log" | head -n 40 >&2
  fail "the package's tests do not build the way Nix builds them (log above)"
}
mapfile -t tests < <(jq -r 'select(.reason == "compiler-artifact" and .profile.test == true and .executable != null)
  | "\(.executable)\t\(.manifest_path)\t\(.target.name)"' "$T/build.json" | sort -u)
[ ${#tests[@]} -gt 0 ] || fail "cargo built no test binary"
note "${#tests[@]} test binaries"

# 4. The stdenv's PATH: its tools and the package's nativeBuildInputs, nothing else.
bin="$WORK/stdenv-bin"
rm -rf "$bin"
mkdir -p "$bin"
stdenv_tools=(bash sh sed grep egrep fgrep awk gawk find xargs diff cmp tar gzip gunzip zcat bzip2 xz make patch file)
mapfile -t coreutils < <(dpkg -L coreutils | grep -E '^/(usr/)?bin/[^/]+$' | xargs -n1 basename)
for tool in "${coreutils[@]}" "${stdenv_tools[@]}" cargo rustc; do
  p=$(type -P "$tool") || continue # the file, not a shell builtin of that name
  ln -sf "$p" "$bin/$tool"
done
for input in "${native_inputs[@]}"; do
  case "$input" in
    pkg-config) ln -sf "$(type -P pkg-config)" "$bin/pkg-config" ;;
    bindgenHook) ;; # sets LIBCLANG_PATH for the build; nothing on PATH
    installShellFiles) ;; # postInstall's installManPage, installShellCompletion; no test runs them
    *) fail "nativeBuildInputs has $input, which this script does not know: add it to the PATH here" ;;
  esac
done
for absent in ip nix nix-env systemctl systemd-run curl promtool; do
  [ ! -e "$bin/$absent" ] || fail "$absent leaked into the stdenv PATH"
done

# 5. Run each binary in its own network namespace as the build user.
chown -R "$BUILD_UID:$BUILD_UID" "$src"
mkdir -p "$target/tmp"
chown -R "$BUILD_UID:$BUILD_UID" "$target/tmp"
cores=$(nproc)
# Each binary's TMPDIR, private to the build user, under a directory it can reach ($T is
# root's own).
tmproot="$WORK/build-tmp"
rm -rf "$tmproot"
mkdir -p "$tmproot"
chmod 755 "$WORK" "$tmproot"
failed=()
# LABNODE_SANDBOX_LOAD=N: N busy loops beside the tests, as a loaded builder has (a check of
# their timing windows by hand; tests/run runs without).
for _ in $(seq 1 "${LABNODE_SANDBOX_LOAD:-0}"); do
  bg busy sh -c 'while :; do :; done'
done
[ "${LABNODE_SANDBOX_LOAD:-0}" = 0 ] || note "under load: ${LABNODE_SANDBOX_LOAD} busy loops on $(nproc) cores"
for entry in "${tests[@]}"; do
  IFS=$'\t' read -r exe manifest name <<<"$entry"
  crate=$(dirname "$manifest")
  label="$(realpath --relative-to="$src" "$crate"):$name"
  tmp=$(mktemp -d "$tmproot/XXXXXX")
  chown "$BUILD_UID:$BUILD_UID" "$tmp"
  chmod 700 "$tmp"
  log="$T/test-$(basename "$exe").log"
  if unshare --net -- sh -c '
      ip link set lo up || exit 99
      cd "$1" || exit 99
      shift
      exec "$@"' sh "$crate" \
    setpriv --reuid="$BUILD_UID" --regid="$BUILD_UID" --clear-groups --inh-caps=-all --bounding-set=-all \
    env -i HOME=/homeless-shelter PATH="$bin" TMPDIR="$tmp" TMP="$tmp" TEMP="$tmp" TEMPDIR="$tmp" \
    NIX_BUILD_TOP="$tmp" NIX_BUILD_CORES="$cores" TERM=xterm-256color \
    CARGO_MANIFEST_DIR="$crate" CARGO_PKG_NAME="$(basename "$crate")" \
    "$exe" --test-threads="$cores" "${check_flags[@]}" >"$log" 2>&1; then
    note "ok   $label ($(grep -oE '[0-9]+ passed' "$log" | awk '{s += $1} END {print s + 0}') passed)"
  else
    failed+=("$label")
    echo "FAIL $label:" >&2
    grep -E '^test .* FAILED$|panicked at|^---- ' "$log" | head -n 20 | sed 's/^/     /' >&2
    sed -n '/^failures:$/,$p' "$log" | head -n 60 | sed 's/^/     | /' >&2
  fi
done
[ ${#failed[@]} = 0 ] || fail "${#failed[@]} test binaries fail in the Nix build's sandbox: ${failed[*]}"
note "every test binary passes as the Nix build runs it"
