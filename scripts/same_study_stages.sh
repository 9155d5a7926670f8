#!/usr/bin/env bash
# Do some of the study's stages give the same figures in two checkouts? (e.g. the commit a published study ran
# at, and HEAD)
#
#   scripts/same_study_stages.sh OTHER_CHECKOUT [GLOB] [PRESET]     default GLOB '*random-init-s0', PRESET quick
#
# Runs `python -m plugins.reproduce --preset PRESET --only GLOB` in this checkout and in OTHER_CHECKOUT, one
# after the other, each into its own temporary run folder, then compares every stage's metrics (stage.json)
# and lr_per_step.csv. Exit 0 when all are identical.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OTHER="$(cd "${1:?usage: $0 OTHER_CHECKOUT [GLOB] [PRESET]}" && pwd)"
GLOB="${2:-*random-init-s0}"
PRESET="${3:-quick}"
OUT="$(mktemp -d)"
for tree in "$ROOT" "$OTHER"; do
  name=$([ "$tree" = "$ROOT" ] && echo this || echo other)
  py="$tree/.venv/bin/python"; [ -x "$py" ] || py="$ROOT/.venv/bin/python"
  echo "==> $tree ($(git -C "$tree" rev-parse --short HEAD)): --preset $PRESET --only '$GLOB'"
  (cd "$tree" && "$py" -m plugins.reproduce --preset "$PRESET" --only "$GLOB" --out "$OUT/$name" > "$OUT/$name.log" 2>&1)
done
"$ROOT/.venv/bin/python" - "$OUT" <<'PY'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
ok = True
for this in sorted((out / "this" / "stages").glob("*/stage.json")):
    stage = this.parent.name.rsplit("-", 1)[0]
    (other,) = (out / "other" / "stages").glob(f"{stage}-*/stage.json")
    a, b = json.loads(this.read_text())["metrics"], json.loads(other.read_text())["metrics"]
    lr = [next(p.parent.rglob("lr_per_step.csv"), None) for p in (this, other)]
    same_lr = None if lr[0] is None else lr[0].read_bytes() == lr[1].read_bytes()
    same = a == b and same_lr is not False
    ok &= same
    shown = ", ".join(f"{k}={v:.4g}" for k, v in a.items() if isinstance(v, int | float))
    print(f"{stage}: {'identical' if same else 'DIFFER'} ({shown or 'no metrics'}"
          f"{'' if same_lr is None else ', lr_per_step.csv ' + ('identical' if same_lr else 'differs')})")
    if a != b:
        print(f"    this:  {a}\n    other: {b}")
sys.exit(0 if ok else 1)
PY
