#!/usr/bin/env bash
# The client alone on its lowest supported Python (3.10): `pip install ./clients/python pytest`
# in a fresh venv (no daemon package, no torch), then the tests in tests/client/alone, which
# import neither. Usage: bash .ci/client-alone.sh   (PYTHON310=/path/to/python3.10 to choose)
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
root=$PWD

py=${PYTHON310:-}
if [ -z "$py" ] && python3.10 -c "" 2>/dev/null; then
  py=python3.10
fi
if [ -z "$py" ] && command -v pyenv >/dev/null 2>&1; then  # installed but not the global one
  v=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.10(\.[0-9]+)?$' | tail -n1 || true)
  if [ -n "$v" ]; then py="$(pyenv root)/versions/$v/bin/python3.10"; fi
fi
if [ -z "$py" ]; then echo "client-alone: no Python 3.10 found (set PYTHON310)"; exit 1; fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "== client alone on $("$py" --version)"
"$py" -m venv "$work/venv"
"$work/venv/bin/pip" install -q ./clients/python pytest

# From outside the checkout: what the venv itself holds.
(cd "$work" && "$work/venv/bin/python" - <<'PY'
import importlib.util
import pathlib

import rhythmd_client

for name in ("torch", "rhythmd"):
    assert importlib.util.find_spec(name) is None, f"{name} must not be installed here"
pkg = pathlib.Path(rhythmd_client.__file__).parent
assert (pkg / "py.typed").is_file(), "py.typed is not shipped"
assert "site-packages" in str(pkg), pkg
print("installed:", pkg, rhythmd_client.__version__)
PY
)

# --confcutdir: the conftests above tests/client/alone need the daemon's test dependencies.
"$work/venv/bin/pytest" -q -p no:cacheprovider --rootdir "$root" \
  --confcutdir "$root/tests/client/alone" "$root/tests/client/alone"
