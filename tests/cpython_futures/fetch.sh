#!/bin/sh
# Fetch CPython 3.11's own concurrent.futures tests (Lib/test/test_concurrent_futures.py)
# from Debian's libpython3.11-testsuite package into a cache directory, for
# tests/test_cpython_futures.py. The file is not kept in the repository.
#
#   tests/cpython_futures/fetch.sh [CACHE_DIR]
#
# CACHE_DIR defaults to $TASKFARM_CPYTHON_TESTS, else ~/.cache/taskfarm/cpython-tests.
# Prints the path of the file. Exits 0 when the file is there (fetched now or
# before), 2 with a reason on stderr when it cannot be had (no apt-get or dpkg-deb,
# no network, the package unknown to apt: run `apt-get update` first).
set -eu

dest="${1:-${TASKFARM_CPYTHON_TESTS:-${XDG_CACHE_HOME:-$HOME/.cache}/taskfarm/cpython-tests}}"
file="$dest/test_concurrent_futures.py"
if [ -s "$file" ]; then
    echo "$file"
    exit 0
fi
for tool in apt-get dpkg-deb; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "fetch.sh: $tool is not available: cannot fetch libpython3.11-testsuite" >&2
        exit 2
    fi
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
cd "$work"
if ! apt-get download libpython3.11-testsuite >download.log 2>&1; then
    echo "fetch.sh: apt-get download libpython3.11-testsuite failed (no network, or run" \
         "apt-get update first):" >&2
    tail -n 3 download.log >&2
    exit 2
fi
dpkg-deb -x libpython3.11-testsuite_*.deb root
found="root/usr/lib/python3.11/test/test_concurrent_futures.py"
if [ ! -s "$found" ]; then
    echo "fetch.sh: the package holds no test/test_concurrent_futures.py" >&2
    exit 2
fi
mkdir -p "$dest"
cp "$found" "$dest/.test_concurrent_futures.py.part"
mv "$dest/.test_concurrent_futures.py.part" "$file"
dpkg-deb -f libpython3.11-testsuite_*.deb Version >"$dest/VERSION"
echo "$file"
