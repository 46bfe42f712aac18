#!/usr/bin/env bash
# Install the Autobahn|Testsuite (wstest) into a Python 2.7 virtualenv.
#
# Usage (as root, on Debian 12 "bookworm"):
#   scripts/autobahn/install.sh
#
# Idempotent: does nothing when $AUTOBAHN_PREFIX/bin/wstest already works.
#
# Environment:
#   AUTOBAHN_PREFIX   virtualenv location (default /opt/autobahn)
#   DEBIAN_ARCHIVE    Debian archive URL to take bullseye packages from
#                     (default: read from this machine's own apt sources)
#
# Why it is this complicated: wstest is Python 2.7 code and Debian 12 has no
# Python 2. Debian 11 "bullseye" still has python2.7, so we add bullseye to a
# throw-away apt configuration (pinned below bookworm, so only what bookworm
# lacks comes from it) without touching /etc/apt. pip for Python 2 is the last
# release that supports it (20.3.4), run straight from its wheel.
set -euo pipefail

PREFIX=${AUTOBAHN_PREFIX:-/opt/autobahn}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REQUIREMENTS=$SCRIPT_DIR/requirements-py27.txt
PY2=/usr/bin/python2.7   # full path: a python2.7 on PATH may be a pyenv shim
PIP_VERSION=20.3.4
VIRTUALENV_VERSION=16.7.12
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# Packages taken as prebuilt cp27mu manylinux wheels instead of being compiled.
ONLY_BINARY=cryptography,cffi,Twisted,zope.interface,MarkupSafe,ujson

log() { printf '[autobahn-install] %s\n' "$*"; }
die() { printf '[autobahn-install] ERROR: %s\n' "$*" >&2; exit 1; }

wstest_works() {
    [ -x "$PREFIX/bin/wstest" ] &&
        "$PREFIX/bin/wstest" --help >/dev/null 2>&1 &&
        "$PREFIX/bin/python" -c 'import autobahntestsuite, autobahn, twisted' >/dev/null 2>&1
}

if wstest_works; then
    log "wstest already installed and working: $PREFIX/bin/wstest (nothing to do)"
    exit 0
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (installs Debian packages and writes $PREFIX)"
[ -r "$REQUIREMENTS" ] || die "missing $REQUIREMENTS"

TMP=$(mktemp -d /tmp/autobahn-install.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
chmod 755 "$TMP"   # apt downloads as the unprivileged _apt user
export PIP_NO_PYTHON_VERSION_WARNING=1   # pip 20.3.4 nags about Python 2.7 on every call

# --------------------------------------------------------------------------
# 1. Debian packages: python2.7 + headers (from bullseye), a C toolchain.
# --------------------------------------------------------------------------

# Print the first http(s) archive URI that serves suite $1, from the machine's
# apt sources: one-line *.list files and deb822 *.sources files.
find_archive_uri() {
    local suite=$1 f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        # deb [opts] URI SUITE COMPONENTS...
        awk -v want="$suite" '
            $1 == "deb" {
                i = 2
                if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
                if ($(i+1) == want && $i ~ /^https?:\/\//) { print $i; exit }
            }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        # deb822 stanzas separated by blank lines; "Key: value" fields.
        awk -v want="$suite" '
            function flush(   n, s, i) {
                if (enabled != "no" && (" " types " ") ~ / deb /) {
                    n = split(suites, s, /[ \t]+/)
                    for (i = 1; i <= n; i++) if (s[i] == want) {
                        n = split(uris, s, /[ \t]+/)
                        for (i = 1; i <= n; i++) if (s[i] ~ /^https?:\/\//) { print s[i]; exit }
                    }
                }
                types = uris = suites = enabled = ""
            }
            /^#/ { next }
            /^[ \t]*$/ { flush(); next }
            /^[^ \t]/ {
                key = tolower($1); sub(/:.*/, "", key)
                val = $0; sub(/^[^:]*:[ \t]*/, "", val)
                if (key == "types") types = val
                else if (key == "uris") uris = val
                else if (key == "suites") suites = val
                else if (key == "enabled") enabled = tolower(val)
            }
            END { flush() }' "$f"
    done
}

apt_packages_present() {
    local p
    for p in python2.7 python2.7-dev gcc libc6-dev; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || return 1
    done
    [ -x "$PY2" ]
}

ensure_python3_pip() {
    # Needed only to download the pip wheel for Python 2.
    python3 -m pip --version >/dev/null 2>&1 || /usr/bin/python3 -m pip --version >/dev/null 2>&1
}

if apt_packages_present && ensure_python3_pip; then
    log "Debian packages already present (python2.7, python2.7-dev, gcc, libc6-dev, python3-pip)"
else
    . /etc/os-release
    codename=${VERSION_CODENAME:-}
    [ "$codename" = bookworm ] || log "warning: expected Debian 12 (bookworm), found '${codename:-unknown}'; trying anyway"

    archive=${DEBIAN_ARCHIVE:-}
    if [ -z "$archive" ]; then
        archive=$(find_archive_uri "$codename" | head -n 1)
    fi
    [ -n "$archive" ] || die "could not find the Debian archive URL for '$codename' in /etc/apt sources; set DEBIAN_ARCHIVE"
    log "Debian archive (from apt sources): $archive"

    # Throw-away apt configuration: the system's own sources plus bullseye,
    # with private package lists and cache, so /etc/apt and /var/lib/apt/lists
    # are left as they were. The system sources are kept so that -dev packages
    # match the exact versions of the libraries already installed.
    mkdir -p "$TMP/apt/lists/partial" "$TMP/apt/cache/archives/partial"
    {
        [ -r /etc/apt/sources.list ] && cat /etc/apt/sources.list
        echo "deb [signed-by=$KEYRING] $archive bullseye main"
    } >"$TMP/apt/sources.list"
    # Pin bullseye below bookworm (default 500): it only fills in what
    # bookworm lacks (python2.7*, libpython2.7*, libssl1.1, libffi7, ...).
    cat >"$TMP/apt/preferences" <<'EOF'
Package: *
Pin: release n=bullseye
Pin-Priority: 100
EOF
    apt_opts=(
        -o "Dir::Etc::sourcelist=$TMP/apt/sources.list"
        -o "Dir::Etc::sourceparts=/etc/apt/sources.list.d"
        -o "Dir::Etc::preferences=$TMP/apt/preferences"
        -o "Dir::State::Lists=$TMP/apt/lists"
        -o "Dir::Cache=$TMP/apt/cache"
    )
    log "apt-get update (private lists incl. bullseye)"
    apt-get "${apt_opts[@]}" update -q
    pkgs=(python2.7 python2.7-dev gcc libc6-dev)
    ensure_python3_pip || pkgs+=(python3-pip)
    log "apt-get install ${pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y -q --no-install-recommends "${pkgs[@]}"
fi
log "$("$PY2" --version 2>&1) at $PY2"

# --------------------------------------------------------------------------
# 2. pip 20.3.4 wheel (last pip for Python 2) and virtualenv 16.7.12.
# --------------------------------------------------------------------------
if python3 -m pip --version >/dev/null 2>&1; then PY3=python3; else PY3=/usr/bin/python3; fi
log "downloading pip==$PIP_VERSION wheel with $PY3"
"$PY3" -m pip download -q --no-deps --only-binary=:all: -d "$TMP/wheels" "pip==$PIP_VERSION"
PIP_WHL=$(ls "$TMP"/wheels/pip-"$PIP_VERSION"-*.whl)
pip2() { "$PY2" "$PIP_WHL/pip" --disable-pip-version-check "$@"; }   # a wheel is runnable as a zip

log "installing virtualenv==$VIRTUALENV_VERSION (temporary, in $TMP)"
pip2 install -q --target "$TMP/virtualenv" "virtualenv==$VIRTUALENV_VERSION"

if [ -e "$PREFIX" ]; then
    # Broken or partial install: only remove it if it really is a virtualenv.
    if [ -f "$PREFIX/bin/activate" ] || [ -z "$(ls -A "$PREFIX")" ]; then
        log "removing broken install at $PREFIX"
        rm -rf "$PREFIX"
    else
        die "$PREFIX exists and is not a virtualenv; remove it or set AUTOBAHN_PREFIX"
    fi
fi
log "creating virtualenv $PREFIX"
PYTHONPATH="$TMP/virtualenv" "$PY2" -m virtualenv --no-download -p "$PY2" "$PREFIX" >/dev/null
"$PREFIX/bin/python" "$PIP_WHL/pip" install -q --disable-pip-version-check "$PIP_WHL"

# --------------------------------------------------------------------------
# 3. wstest and its pinned dependencies.
# --------------------------------------------------------------------------
log "installing autobahntestsuite and pinned dependencies (compiles wsaccel, txaio, autobahn)"
"$PREFIX/bin/pip" install -q --disable-pip-version-check --only-binary "$ONLY_BINARY" -r "$REQUIREMENTS"

wstest_works || die "wstest installed but '$PREFIX/bin/wstest --help' fails"
log "done: $PREFIX/bin/wstest ($("$PREFIX/bin/python" -c 'import autobahntestsuite; print(autobahntestsuite.__version__)' 2>/dev/null || echo '?'))"
