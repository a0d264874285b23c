#!/usr/bin/env bash
# One-time set-up on a fresh machine: a venv in .venv with vqsearch and its test tools.
# torch is pinned to the build pip finds on this kind of machine; elsewhere it comes from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
apt_install() {  # a Debian package, or a warning saying what goes without it
    { $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null; } ||
        echo "setup: could not install Debian's $1: $2" >&2
}
# WordNet 3.0 (Debian's wordnet-base): text queries gather ImageNet classes under their head noun.
if [ ! -f /usr/share/wordnet/data.noun ] && [ -z "${VQSEARCH_WORDNET:-}" ]; then
    apt_install wordnet-base "text queries will not use WordNet"
fi
# PostgreSQL's server (Debian's postgresql): tests/test_postgres.py runs a throwaway one.
if ! command -v pg_ctl >/dev/null && ! compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null; then
    apt_install postgresql "the PostgreSQL tests will be skipped (and fail under CI=true)"
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/pip install -q -e '.[test]'
