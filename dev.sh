#!/usr/bin/env bash
# The project's two entry points, as the README gives them:
#   ./dev.sh demo [OPTIONS]    the main job: `xbarode demo` (options are passed on)
#   ./dev.sh test [PYTEST]     the whole test suite on every core (arguments go to pytest)
# Each creates the virtual environment .venv on first use and installs what it needs into it;
# it reinstalls only when pyproject.toml changes. Set XBARODE_VENV to use another folder.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${XBARODE_VENV:-$root/.venv}"

usage() {
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

find_python() {
    for candidate in "${PYTHON:-}" python3.11 python3; do
        if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            echo "$candidate"
            return
        fi
    done
    echo "dev.sh: Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)" >&2
    exit 1
}

# ensure_venv EXTRAS: a venv with the project installed (editable) with the given extras.
ensure_venv() {
    local extras="$1" stamp hash
    stamp="$venv/.xbarode-installed"
    hash="$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
    if [ ! -x "$venv/bin/python" ]; then
        echo "dev.sh: creating $venv" >&2
        "$(find_python)" -m venv "$venv"
    fi
    # Reuse an install of this pyproject with these extras, or with [test], a superset of all.
    if [ -f "$stamp" ] && grep -qxF -e "$hash [$extras]" -e "$hash [test]" "$stamp"; then
        return
    fi
    echo "dev.sh: installing xbarode${extras:+[$extras]} into $venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -e "$root${extras:+[$extras]}"
    echo "$hash [$extras]" > "$stamp"
}

# ensure_iverilog: Icarus Verilog, the second co-simulation simulator, is a Debian package,
# not a PyPI one; install it when it is missing (as root), else say how and stop.
ensure_iverilog() {
    local log
    command -v iverilog >/dev/null 2>&1 && return
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "dev.sh: installing Icarus Verilog (apt-get install iverilog)" >&2
        # apt's output is shown only if it fails.
        if ! log="$( (apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog) 2>&1)"; then
            echo "$log" >&2
            echo "dev.sh: installing iverilog failed" >&2
            exit 1
        fi
    else
        echo "dev.sh: Icarus Verilog is missing; install it with: sudo apt-get install iverilog" >&2
        exit 1
    fi
}

[ $# -ge 1 ] || usage
command="$1"
shift
case "$command" in
    demo)
        ensure_venv ""
        exec "$venv/bin/xbarode" demo "$@"
        ;;
    test)
        ensure_venv "test"
        ensure_iverilog
        cd "$root"
        # One worker per core (pytest-xdist); a later -n in the arguments wins (-n 0: none).
        exec "$venv/bin/pytest" -n "${XBARODE_TEST_WORKERS:-auto}" --dist worksteal "$@"
        ;;
    *)
        usage
        ;;
esac
