#!/usr/bin/env bash
# One-time set-up on a fresh machine: a venv in .venv with vqsearch and its test tools.
# torch is pinned to the build pip finds on this kind of machine; elsewhere it comes from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
# WordNet 3.0 (Debian's wordnet-base): text queries gather ImageNet classes under their head noun.
if [ ! -f /usr/share/wordnet/data.noun ] && [ -z "${VQSEARCH_WORDNET:-}" ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wordnet-base >/dev/null; } ||
        echo "setup: could not install Debian's wordnet-base: text queries will not use WordNet" >&2
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/pip install -q -e '.[test]'
