# Sourced by scripts/test, scripts/fuzz, scripts/demo and scripts/bench-*: install what building and testing needs, on Debian 12.
# Nothing here is skipped silently: a missing tool stops the run with the command that installs it.

root_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    echo "error: need root (or sudo) to run: $*" >&2; return 1; fi
}

# Install the Debian packages listed in scripts/lib/packages.txt that are not installed yet.
ensure_debian_packages() {
  local missing=() p
  while read -r p; do
    p=${p%%#*}; p=${p// /}
    [ -n "$p" ] || continue
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done < "$root_dir/scripts/lib/packages.txt"
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # On a machine with systemd, installing coturn starts and enables the system's TURN server
  # (on all addresses, with /etc/turnserver.conf). The tests start their own in the lab; no
  # other may run. Without systemd (a container) the service never started and `stop` fails.
  if [[ " ${missing[*]} " == *" coturn "* ]] && command -v systemctl >/dev/null 2>&1; then
    as_root systemctl disable coturn >/dev/null 2>&1 || true
    as_root systemctl stop coturn >/dev/null 2>&1 || true
  fi
}

# A Python venv in .venv with the test-time peers of tests/python/requirements.txt.
# Exports SHIELDCALL_PYTHON, which the interop tests require (they fail without it, never skip).
ensure_python_venv() {
  local venv="$root_dir/.venv" req="$root_dir/tests/python/requirements.txt" stamp
  stamp="$venv/.requirements.sha256"
  if [ ! -x "$venv/bin/python" ] || ! sha256sum -c --status "$stamp" 2>/dev/null; then
    echo "setting up the Python test peers in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    (cd / && sha256sum "$req") > "$stamp"
  fi
  export SHIELDCALL_PYTHON="$venv/bin/python"
}

# cargo must be there (the only thing a fresh machine is assumed to have).
ensure_cargo() {
  command -v cargo >/dev/null 2>&1 && return 0
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH" && return 0
  echo "error: cargo not found; install the Rust toolchain (rustup) first" >&2; return 1
}

# cargo-fuzz (from crates.io, pinned), for scripts/fuzz.
CARGO_FUZZ_VERSION=0.13.2
ensure_cargo_fuzz() {
  # `cargo fuzz` also finds it in $CARGO_HOME/bin when that is not on PATH.
  if cargo fuzz --version >/dev/null 2>&1; then return 0; fi
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
}
