#!/usr/bin/env bash
# Print the path of a working Python 3.9 (the Python of TorchServe's official images), or fail saying where
# it looked. pyenv's `python3.9` shim exists even where 3.9 is not among its active versions, and then
# fails: each candidate is run, not just found.
set -u
candidates=(python3.9)
root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")  # pyenv's versions, on PATH or not
for dir in "$root"/versions/3.9*; do
    if [ -d "$dir" ]; then candidates+=("$dir/bin/python3.9"); fi
done
candidates+=(/usr/bin/python3.9 /usr/local/bin/python3.9)
for python in "${candidates[@]}"; do
    if "$python" -c 'import sys, venv; sys.exit(sys.version_info[:2] != (3, 9))' >/dev/null 2>&1; then
        "$python" -c 'import sys; print(sys.executable)'
        exit 0
    fi
done
echo "error: no working Python 3.9 (tried: ${candidates[*]}); install one, e.g. 'pyenv install 3.9'," \
     "or pass PYTHON39=/path/to/python3.9" >&2
exit 1
