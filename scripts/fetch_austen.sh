#!/usr/bin/env bash
# Fetch Jane Austen's six novels (Debian package r-cran-janeaustenr, ~1.6 MB) for the lm recipes (`sema-bench recipe=quick/lm`), without R:
#   scripts/fetch_austen.sh                 # into $SEMA_AUSTEN_DIR, else ${SEMA_BENCH_CACHE:-~/.cache/sema-bench}/janeaustenr
#   scripts/fetch_austen.sh /some/folder    # elsewhere (then export SEMA_AUSTEN_DIR=/some/folder)
# Same as `python -m benchmarks.data.austen [--dest DIR]`: apt-get download + dpkg-deb -x, nothing is installed.
set -euo pipefail
dest="${1:-${SEMA_AUSTEN_DIR:-${SEMA_BENCH_CACHE:-$HOME/.cache/sema-bench}/janeaustenr}}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"  # apt-get downloads as the unprivileged _apt user when it can reach the folder
(cd "$tmp" && apt-get download r-cran-janeaustenr)
mkdir -p "$dest"
dpkg-deb -x "$tmp"/r-cran-janeaustenr_*.deb "$dest"
echo "unpacked into $dest ($(ls "$dest"/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb))"
