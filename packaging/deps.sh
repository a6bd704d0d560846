#!/bin/sh
# deps.sh: make sure every library and tool the build and the tests need is present, installing
# what is missing with apt-get (through sudo when not root), then print the compiler and linker
# flags as make variables. The Makefile includes the output as build/config.mk.
set -eu

# Debian package that provides each pkg-config module.
modules="libpcre2-8:libpcre2-dev jansson:libjansson-dev libuv:libuv1-dev sqlite3:libsqlite3-dev
cmocka:libcmocka-dev inih:libinih-dev libsystemd:libsystemd-dev"

missing=""
command -v pkg-config >/dev/null 2>&1 || missing="pkg-config"
command -v cc >/dev/null 2>&1 || missing="$missing gcc"
for pair in $modules; do
    mod=${pair%%:*}
    pkg=${pair#*:}
    if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists "$mod"; then
        missing="$missing $pkg"
    fi
done
# pytest for the integration tests, run with Debian's own python3.
if ! /usr/bin/python3 -c 'import pytest' >/dev/null 2>&1; then
    missing="$missing python3-pytest"
fi
[ -x /usr/bin/sqlite3 ] || missing="$missing sqlite3"
# make fuzz (ATTUNE_DEPS_FUZZ=1): clang and its libFuzzer and sanitizer runtimes.
if [ -n "${ATTUNE_DEPS_FUZZ:-}" ]; then
    if ! command -v clang >/dev/null 2>&1; then
        missing="$missing clang libclang-rt-dev"
    elif ! ls "$(clang -print-resource-dir)"/lib/*/libclang_rt.fuzzer*.a >/dev/null 2>&1; then
        missing="$missing libclang-rt-dev"
    fi
fi
# http_parser (the metrics endpoint's HTTP parser) ships no pkg-config file: look for its header;
# the Makefile links it with -lhttp_parser.
[ -f /usr/include/http_parser.h ] || missing="$missing libhttp-parser-dev"

if [ -n "$missing" ]; then
    echo "deps.sh: installing:$missing" >&2
    if [ "$(id -u)" = 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "deps.sh: missing packages ($missing) and neither root nor sudo; install them" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    if ! $SUDO apt-get install -y --no-install-recommends $missing >&2; then
        $SUDO apt-get update >&2
        # shellcheck disable=SC2086
        $SUDO apt-get install -y --no-install-recommends $missing >&2
    fi
fi
# valgrind for tests/integration/test_valgrind.py: wanted, not required. That test skips without
# it, so a machine that cannot install it (no root or sudo, an architecture Debian has no
# valgrind for) still builds and tests.
if ! command -v valgrind >/dev/null 2>&1; then
    echo "deps.sh: installing: valgrind" >&2
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    if ! $SUDO apt-get install -y --no-install-recommends valgrind >&2 &&
        ! { $SUDO apt-get update >&2 &&
            $SUDO apt-get install -y --no-install-recommends valgrind >&2; }; then
        echo "deps.sh: could not install valgrind; tests/integration/test_valgrind.py will be" \
             "skipped" >&2
    fi
fi

for pair in $modules; do
    mod=${pair%%:*}
    var=$(echo "$mod" | tr 'a-z0-9-' 'A-Z0-9_' | sed 's/^LIB//')
    echo "${var}_CFLAGS = $(pkg-config --cflags "$mod")"
    echo "${var}_LIBS = $(pkg-config --libs "$mod")"
done
