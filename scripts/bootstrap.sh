#!/usr/bin/env bash
# Creates everything the project needs on a fresh Debian/Ubuntu machine: Debian packages that
# are missing (venv support, mosquitto, chromium, nodejs), a virtualenv in .venv, the Python
# packages, the npm package of MicroPython's WebAssembly port in .cache/mpwasm and the
# MicroPython stubs in .cache/stubs.
# Safe to run again: it only installs what is missing. Usage: scripts/bootstrap.sh [--quiet]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
need_apt=()

have_cmd() { command -v "$1" >/dev/null 2>&1; }

if ! have_cmd "$PY"; then
  echo "bootstrap: $PY not found; install Python 3.11 or newer (apt-get install python3)" >&2
  exit 1
fi
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  echo "bootstrap: $("$PY" --version) is too old; Python 3.11 or newer is needed" >&2
  exit 1
fi
"$PY" -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=("python3-venv")
have_cmd mosquitto || [ -x /usr/sbin/mosquitto ] || need_apt+=("mosquitto")
if [ "${BOOTSTRAP_BROWSER:-1}" = 1 ]; then
  [ -x /usr/bin/chromium ] || need_apt+=("chromium")
fi
# MicroPython's WebAssembly port, the 32-bit interpreter of the firmware's heap measurements
# (firmware/wasmrun.py pins the same version), in a git-ignored folder of the project.
MPWASM_VERSION=1.29.0-6
mpwasm_meta=.cache/mpwasm/node_modules/@micropython/micropython-webassembly-pyscript/package.json
have_mpwasm() { grep -qs "\"version\": \"$MPWASM_VERSION\"" "$mpwasm_meta"; }
have_cmd node || need_apt+=("nodejs")
have_mpwasm || have_cmd npm || need_apt+=("npm")

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${need_apt[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # Debian starts mosquitto as a system service on install; the project starts its own brokers.
fi

if ! have_mpwasm; then
  echo "bootstrap: installing MicroPython's WebAssembly port $MPWASM_VERSION into .cache/mpwasm"
  npm install --prefix .cache/mpwasm --no-audit --no-fund --loglevel=error \
    "@micropython/micropython-webassembly-pyscript@$MPWASM_VERSION"
fi

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing Python packages into .venv"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  touch "$stamp"
fi

# The MicroPython stubs the firmware is type-checked against (tests/firmware/test_typecheck.py),
# one folder per board: each package replaces the standard library, so they cannot share one.
STUBS_VERSION=1.29.0.post1
for board in esp32 rp2; do
  dir=.cache/stubs/$board
  if [ ! -f "$dir/.version-$STUBS_VERSION" ]; then
    echo "bootstrap: installing micropython-$board-stubs $STUBS_VERSION into $dir"
    rm -rf "$dir"
    .venv/bin/python -m pip install --quiet --target "$dir" \
      "micropython-$board-stubs==$STUBS_VERSION"
    touch "$dir/.version-$STUBS_VERSION"
  fi
done
