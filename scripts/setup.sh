#!/usr/bin/env bash
# One-time set-up on a fresh machine: a venv in .venv with vqsearch and its test tools.
# torch is pinned to the build pip finds on this kind of machine; elsewhere it comes from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages: WordNet 3.0 (wordnet-base), under whose head nouns text queries gather ImageNet
# classes; Chromium and its driver, which the browser test of `vqsearch serve` drives; PostgreSQL's
# server, of which tests/test_postgres.py runs a throwaway one.
need=()
[ -f /usr/share/wordnet/data.noun ] || [ -n "${VQSEARCH_WORDNET:-}" ] || need+=(wordnet-base)
{ command -v chromium && command -v chromedriver; } >/dev/null || need+=(chromium chromium-driver)
command -v pg_ctl >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    { $SUDO apt-get update -qq &&
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; } ||
        echo "setup: could not install Debian's ${need[*]}: text queries without WordNet, no browser or PostgreSQL tests" >&2
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/pip install -q -e '.[test]'
