#!/usr/bin/env bash
# The test command: prepares a fresh Debian 12 machine (system packages, tox,
# the pyenv interpreters on PATH) and runs every tox environment.
# Extra arguments go to tox, e.g. `tools/test.sh -e py311 -- tests/unit`.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup-system.sh

# tox finds the interpreters only when their bin/ directories are on PATH.
if command -v pyenv >/dev/null 2>&1 || [ -d "${PYENV_ROOT:-$HOME/.pyenv}" ]; then
    root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
    for v in "$root"/versions/*; do
        [ -x "$v/bin/python" ] && PATH="$v/bin:$PATH"
    done
    export PATH
fi

python3 -m venv .venv-tools
.venv-tools/bin/python -m pip install --quiet --upgrade pip 'tox>=4.11'

if [ $# -eq 0 ]; then
    exec .venv-tools/bin/tox run
fi
exec .venv-tools/bin/tox "$@"
