#!/usr/bin/env bash
# The test command: prepares a fresh Debian 12 machine (system packages, tox,
# the pyenv interpreters on PATH) and runs every tox environment.
# Extra arguments go to tox, e.g. `tools/test.sh -e py311 -- tests/unit`.
set -euo pipefail
cd "$(dirname "$0")/.."

tools/setup-system.sh

python3 -m venv .venv-tools
.venv-tools/bin/python -m pip install --quiet --upgrade pip 'tox>=4.11'

# tox finds the interpreters (python3.6 ... python3.13) only when their bin/
# directories are on PATH; appended, so that the default python3 stays first.
if command -v pyenv >/dev/null 2>&1 || [ -d "${PYENV_ROOT:-$HOME/.pyenv}" ]; then
    root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
    for v in "$root"/versions/*; do
        [ -x "$v/bin/python" ] && PATH="$PATH:$v/bin"
    done
    export PATH
fi

if [ $# -eq 0 ]; then
    exec .venv-tools/bin/tox run
fi
exec .venv-tools/bin/tox "$@"
