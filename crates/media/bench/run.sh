#!/usr/bin/env bash
# Connect time (ours beside aiortc, same run) and CPU of a two-way call. Figures: README.md.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export SHIELDCALL_PYTHON="${SHIELDCALL_PYTHON:-$PWD/.venv/bin/python}"
exec cargo bench -p shieldcall-media --bench media "$@"
