#!/usr/bin/env bash
# timm's own model tests (tests/test_models.py, shipped in timm's sdist, not in its wheel) on the tricks_* models.
#
#   scripts/timm_model_tests.sh [pytest args...]      e.g.  scripts/timm_model_tests.sh -x -k default_cfgs
#
# The sdist of the pinned timm is taken from $TIMM_SDIST when set, else from the cache
# ${BOT_SDIST_CACHE:-~/.cache/bag-of-tricks/sdists}/, else downloaded there once with pip (by name, version and
# sha256: pip download --require-hashes). Its sha256 is checked in every case. Only its tests/ and pyproject.toml
# are unpacked, into a temporary folder, so the installed timm is the one under test. A pytest plugin imports
# timm_ext (registering the models before test_models.py lists them) and deselects every case whose model is not
# a tricks_* one: 160 cases at timm 1.0.31 (8 tests x 20 models), about 10 minutes on 2 cores.
# For another installed timm version, set TIMM_VERSION and TIMM_SHA256 (its sdist's) to match it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
TIMM_VERSION="${TIMM_VERSION:-1.0.31}"
TIMM_SHA256="${TIMM_SHA256:-baa0b333339c46d3d6d4965d99b69f5053afed71210e8f433d7ea5ee6a18f0ec}"
CACHE="${BOT_SDIST_CACHE:-$HOME/.cache/bag-of-tricks/sdists}"

installed=$("$PY" -c "import timm; print(timm.__version__)")
if [ "$installed" != "$TIMM_VERSION" ]; then
  echo "installed timm is $installed, the tests are those of timm $TIMM_VERSION:" \
       "set TIMM_VERSION and TIMM_SHA256 to the installed version's sdist (or run make install)" >&2
  exit 2
fi

sdist="${TIMM_SDIST:-$CACHE/timm-$TIMM_VERSION.tar.gz}"
if [ ! -f "$sdist" ]; then
  if [ -n "${TIMM_SDIST:-}" ]; then echo "TIMM_SDIST=$TIMM_SDIST: no such file" >&2; exit 2; fi
  mkdir -p "$CACHE"
  req=$(mktemp)
  echo "timm==$TIMM_VERSION --hash=sha256:$TIMM_SHA256" > "$req"
  echo "==> downloading the timm $TIMM_VERSION sdist into $CACHE"
  "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: --require-hashes \
      -r "$req" -d "$CACHE"
  rm -f "$req"
fi
echo "$TIMM_SHA256  $sdist" | sha256sum -c --quiet - || { echo "sha256 mismatch for $sdist" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$sdist" -C "$work" --strip-components=1 "timm-$TIMM_VERSION/tests" "timm-$TIMM_VERSION/pyproject.toml"
cat > "$work/tricks_models_only.py" <<'PYEOF'
"""pytest plugin: register the tricks_* models before collection and run timm's cases on them only."""
import timm_ext  # noqa: F401


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        (keep if str(params.get("model_name", "")).startswith("tricks_") else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
PYEOF

cd "$work"
PYTHONPATH="$work:$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m pytest -p tricks_models_only -p no:cacheprovider \
    -q -rf tests/test_models.py "$@"
