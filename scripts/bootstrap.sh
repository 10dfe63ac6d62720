#!/usr/bin/env bash
# Finds a Python >= 3.12, creates .venv beside the project and installs the project into it.
# Idempotent: re-installs only when pyproject.toml changed. Prints the venv's python path last.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
min_minor=12

is_ok() {  # is "$1" a runnable Python >= 3.12?
  "$1" -c "import sys; sys.exit(0 if sys.version_info[:2] >= (3, $min_minor) else 1)" >/dev/null 2>&1
}

find_python() {
  local cand
  if [ -n "${SIGNALBOT_PYTHON:-}" ]; then
    is_ok "$SIGNALBOT_PYTHON" && { echo "$SIGNALBOT_PYTHON"; return 0; }
    echo "SIGNALBOT_PYTHON=$SIGNALBOT_PYTHON is not a Python 3.$min_minor or newer" >&2; return 1
  fi
  for cand in python3.14 python3.13 python3.12 python3 python; do
    if command -v "$cand" >/dev/null 2>&1 && is_ok "$(command -v "$cand")"; then command -v "$cand"; return 0; fi
  done
  # pyenv installs that are not on PATH (pyenv shims refuse versions that are not selected)
  local roots=("${PYENV_ROOT:-}" "$HOME/.pyenv" /root/.pyenv /opt/pyenv /usr/local/pyenv)
  local r
  for r in "${roots[@]}"; do
    [ -n "$r" ] && [ -d "$r/versions" ] || continue
    for cand in $(ls -1d "$r"/versions/3.* 2>/dev/null | sort -t. -k2,2nr -k3,3nr); do
      [ -x "$cand/bin/python3" ] && is_ok "$cand/bin/python3" && { echo "$cand/bin/python3"; return 0; }
    done
  done
  for cand in /usr/local/bin/python3.1[2-9] /usr/bin/python3.1[2-9] /opt/python*/bin/python3; do
    [ -x "$cand" ] && is_ok "$cand" && { echo "$cand"; return 0; }
  done
  if command -v uv >/dev/null 2>&1; then
    cand="$(uv python find ">=3.$min_minor" 2>/dev/null || true)"
    [ -n "$cand" ] && is_ok "$cand" && { echo "$cand"; return 0; }
  fi
  return 1
}

if [ ! -x "$venv/bin/python" ] || ! is_ok "$venv/bin/python"; then
  if ! py="$(find_python)"; then
    cat >&2 <<MSG
signalbot needs Python 3.$min_minor or newer (pandas-ta requires it) and found none.
Looked on PATH (python3.14 .. python3), in pyenv's versions folder, in /usr/local/bin and with uv.
Install one (for example 'pyenv install 3.12'), or point SIGNALBOT_PYTHON at its interpreter, and run again.
MSG
    exit 1
  fi
  echo "bootstrap: creating .venv with $py ($("$py" --version 2>&1))" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
fi

stamp="$venv/.installed"
want="$(cat "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "bootstrap: installing the project and its dependencies into .venv (first time takes a few minutes)" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[dev]" >&2
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
