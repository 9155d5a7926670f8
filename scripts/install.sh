#!/usr/bin/env bash
# One idempotent set-up path for the whole stack (README, tests, CI and the demo all call it).
#
# Creates .venv/ at the repository root and installs torch, timm, the OpenMMLab stack (mmengine, mmcv with
# ops, mmdet, mmseg), Detectron2 (patched PyPI sdist), scikit-image, the Fashion-MNIST Debian package and this
# project in editable mode. mmcv and detectron2 wheels are built once into a cache outside the checkout:
#   ${BOT_WHEEL_CACHE:-~/.cache/bag-of-tricks/wheels}/<package>-<version>-torch<torch version>/
# so a fresh clone on the same machine installs in minutes; a first install, building mmcv, takes about
# 11 minutes on 2 cores (8 of them for mmcv). The mmcv and Detectron2 sdists come from the package index
# through pip, by name, version and sha256. Every step prints its duration; a failing step names itself and
# says what to try.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
PYTHON_BIN="${PYTHON:-python3.11}"
TORCH_VERSION="2.14.1"
TORCHVISION_VERSION="0.29.1"
TIMM_VERSION="1.0.31"
MMCV_VERSION="2.1.0"
MMCV_SHA256="d387bcab66b467479b6660310e23746cfc79c6e57acf04094680adb499a5cd3f"
D2_VERSION="0.6"
D2_SHA256="5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
CACHE="${BOT_WHEEL_CACHE:-$HOME/.cache/bag-of-tricks/wheels}"
FASHION_DIR="${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"
STAMP="$VENV/.bag-of-tricks-installed"

T_ALL=$(date +%s)
step() {  # step "name" "hint if it fails" command...
  local name="$1" hint="$2"; shift 2
  local t0; t0=$(date +%s)
  echo "==> [install] $name"
  if ! "$@"; then
    echo "!!! [install] step failed: $name" >&2
    echo "!!! what to do: $hint" >&2
    exit 1
  fi
  echo "    [install] $name: done in $(( $(date +%s) - t0 )) s"
}

pip_() { "$PY" -m pip install --disable-pip-version-check -q "$@"; }

fetch_sdist() {  # fetch_sdist NAME VERSION SHA256 DIR: NAME's sdist from the package index, the one .tar.gz in DIR
  local name="$1" version="$2" sha="$3" dir="$4"
  echo "$name==$version --hash=sha256:$sha" > "$dir/sdist-requirements.txt"
  # --require-hashes: pip refuses a file of another sha256. --no-build-isolation: to read the sdist's metadata
  # pip runs its setup.py, which imports pkg_resources (setuptools<81) and torch, both from this venv.
  "$PY" -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: --no-build-isolation \
      --require-hashes -r "$dir/sdist-requirements.txt" -d "$dir" || return 1
  local files=("$dir"/*.tar.gz)
  if [ "${#files[@]}" != 1 ] || [ ! -f "${files[0]}" ]; then
    echo "pip download $name==$version: expected one sdist in $dir, found: ${files[*]}" >&2; return 1; fi
  echo "$sha  ${files[0]}" | sha256sum -c --quiet - || { echo "sha256 mismatch for ${files[0]}" >&2; return 1; }
}

make_venv() {
  if [ ! -x "$PY" ]; then "$PYTHON_BIN" -m venv "$VENV"; fi
  # pip <= 26.2: newer pip refuses the detectron2 sdist (direct-URL extra). setuptools < 81 keeps pkg_resources,
  # which mmcv's and detectron2's setup.py import. ninja lets torch's BuildExtension compile in parallel.
  pip_ 'pip==26.2'
  pip_ 'setuptools>=64,<81' wheel ninja
}

install_torch() {
  if "$PY" -c "import torch, torchvision, sys; sys.exit(not (torch.__version__.startswith('$TORCH_VERSION') and torchvision.__version__.startswith('$TORCHVISION_VERSION')))" 2>/dev/null; then
    echo "    torch $TORCH_VERSION already installed"; return 0
  fi
  pip_ "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION" 'setuptools>=64,<81'
}

install_python_deps() {
  pip_ 'setuptools>=64,<81' "timm==$TIMM_VERSION" 'mmengine==0.10.7' 'scikit-image>=0.22' pycocotools ftfy regex \
       tqdm matplotlib pyyaml 'numpy>=1.26' 'pytest>=8' pytest-timeout ruff fvcore iopath 'shapely' terminaltables \
       cloudpickle tabulate termcolor yacs omegaconf hydra-core 'Pillow>=10' pydot tensorboard
  # deepforest is only used for its four bundled aerial images and their VOC boxes; its own dependencies
  # (a whole training stack) are not needed.
  pip_ --no-deps deepforest
}

build_mmcv() {
  local key="$CACHE/mmcv-$MMCV_VERSION-torch$TORCH_VERSION"
  if ls "$key"/mmcv-*.whl >/dev/null 2>&1; then echo "    cached wheel: $(ls "$key"/mmcv-*.whl)"; else
    echo "    no cached wheel in $key: building mmcv $MMCV_VERSION with CPU ops (about 8 minutes on 2 cores)"
    mkdir -p "$key"; local work; work=$(mktemp -d)
    fetch_sdist mmcv "$MMCV_VERSION" "$MMCV_SHA256" "$work" || return 1
    tar -xzf "$work"/*.tar.gz -C "$work"
    local src="$work/mmcv-$MMCV_VERSION"
    # Patch 1: torch 2.14's headers require C++20; mmcv's setup.py forces -std=c++17.
    grep -q -- '-std=c++17' "$src/setup.py" || { echo "mmcv setup.py no longer contains -std=c++17: patch obsolete?" >&2; return 1; }
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    grep -q -- '-std=c++20' "$src/setup.py"
    # -g0: Python's CFLAGS carry -g, which doubles every file's compile time.
    (cd "$src" && CFLAGS="-g0" CXXFLAGS="-g0" MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
        "$PY" -m pip wheel --no-build-isolation --no-deps -w "$key.part" . )
    mv "$key.part"/mmcv-*.whl "$key"/ && rmdir "$key.part"
    rm -rf "$work"
  fi
}

install_mmcv() {
  if "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null; then
    echo "    mmcv $MMCV_VERSION with ops already installed"; return 0; fi
  build_mmcv
  pip_ --no-deps "$CACHE/mmcv-$MMCV_VERSION-torch$TORCH_VERSION"/mmcv-*.whl
  pip_ addict 'packaging' 'pyyaml' 'yapf' 'opencv-python-headless'
}

install_mm() {
  pip_ 'mmdet==3.3.0' 'mmsegmentation==1.2.2' 'setuptools>=64,<81'
}

patch_detectron2() {  # patch_detectron2 SRC: each patch is applied and then checked
  local src="$1"
  # 1. No C++ sources ship in the sdist: build a pure-Python package.
  sed -i 's/ext_modules=get_extensions(),/ext_modules=[],/' "$src/setup.py"
  grep -q 'ext_modules=\[\],' "$src/setup.py"
  # 2. Install the model-zoo configs inside the package.
  "$PY" - "$src/setup.py" <<'PYEOF'
import re, sys
p = sys.argv[1]; s = open(p).read()
s2 = re.sub(r'package_data=\{[^}]*\}', 'package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py", "configs/*.yaml"]}', s, count=1)
assert s2 != s, "detectron2 setup.py: package_data not found"
open(p, "w").write(s2)
PYEOF
  grep -q 'configs/\*\*/\*.yaml' "$src/setup.py"
  if [ ! -d "$src/detectron2/model_zoo/configs" ] && [ -d "$src/configs" ]; then cp -r "$src/configs" "$src/detectron2/model_zoo/configs"; fi
  test -d "$src/detectron2/model_zoo/configs"
  # 3. A pure-Python stand-in for the compiled extension: three modules import _C at import time.
  cat > "$src/detectron2/_C.py" <<'PYEOF'
"""Pure-Python stand-in for detectron2's compiled extension (CPU install without C++ ops)."""
import torch


def get_compiler_version():
    return "none (pure-Python build)"


def get_cuda_version():
    return torch.version.cuda or "none"


def has_cuda():
    return False


def __getattr__(name):
    def _missing(*args, **kwargs):
        raise NotImplementedError(
            f"detectron2._C.{name} is a compiled op, not available in this pure-Python detectron2 build; "
            "axis-aligned Faster/Mask R-CNN use torchvision's ops instead"
        )
    return _missing
PYEOF
  # 4. Pillow 10 removed Image.LINEAR.
  sed -i 's/Image\.LINEAR/Image.BILINEAR/g' "$src/detectron2/data/transforms/transform.py"
  ! grep -q 'Image\.LINEAR' "$src/detectron2/data/transforms/transform.py"
  # 5. NumPy 1.24 removed np.int / np.float / np.str.
  grep -rlE 'np\.(int|float|str|bool)\b[^_0-9]' "$src/detectron2" --include=*.py | while read -r f; do
    sed -i -E 's/np\.(int|float|str|bool)\b([^_0-9(])/\1\2/g; s/np\.(int|float|str|bool)\(/\1(/g' "$f"; done
  ! grep -rnE 'np\.(int|float|str|bool)\b[^_0-9]' "$src/detectron2" --include=*.py
}

install_detectron2() {
  if "$PY" -c "import detectron2, detectron2.modeling, sys; sys.exit(detectron2.__version__ != '$D2_VERSION')" 2>/dev/null; then
    echo "    detectron2 $D2_VERSION already installed"; return 0; fi
  local key="$CACHE/detectron2-$D2_VERSION-torch$TORCH_VERSION"
  if ! ls "$key"/*.whl >/dev/null 2>&1; then
    mkdir -p "$key"; local work; work=$(mktemp -d)
    fetch_sdist pb1-detectron2 "$D2_VERSION" "$D2_SHA256" "$work" || return 1
    tar -xzf "$work"/*.tar.gz -C "$work"
    local src; src=$(ls -d "$work"/pb1-detectron2-*/ | head -1)
    patch_detectron2 "$src"
    (cd "$src" && "$PY" -m pip wheel --no-build-isolation --no-deps -w "$key.part" . )
    mv "$key.part"/*.whl "$key"/ && rmdir "$key.part"
    rm -rf "$work"
  fi
  pip_ --no-deps "$key"/*.whl
}

install_fashion_mnist() {
  if [ -f "$FASHION_DIR/train-images-idx3-ubyte.gz" ]; then echo "    found $FASHION_DIR"; return 0; fi
  local SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
  $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q dataset-fashion-mnist
}

install_project() {
  pip_ --no-build-isolation -e "$ROOT[all,dev]"
}

check_stack() {
  "$PY" -c "import plugins, timm_ext, mm_ext, d2_ext, mmdet, mmseg, detectron2, mmcv.ops, timm, skimage; print('    stack imports: ok (torch', __import__('torch').__version__, ')')"
}

if [ -n "${BOT_INSTALL_ONLY:-}" ]; then  # run one step, e.g. BOT_INSTALL_ONLY=install_detectron2
  step "$BOT_INSTALL_ONLY" "see the output above" "$BOT_INSTALL_ONLY"; exit 0
fi

step "virtual environment .venv (pip 26.2, setuptools<81)" "check that $PYTHON_BIN exists (or set PYTHON=...)" make_venv
step "torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION" "pip must reach PyPI or the local torch files" install_torch
step "python dependencies (timm $TIMM_VERSION, mmengine, scikit-image, ...)" "check the registry connection; rerun make install" install_python_deps
step "mmcv $MMCV_VERSION with CPU ops (cache: $CACHE)" "see the compiler output above; a broken cache entry can be removed from $CACHE" install_mmcv
step "mmdet 3.3.0 + mmsegmentation 1.2.2" "check the registry connection; rerun make install" install_mm
step "detectron2 $D2_VERSION (patched PyPI sdist, cache: $CACHE)" "remove $CACHE/detectron2-* and rerun make install" install_detectron2
step "Debian package dataset-fashion-mnist" "run: apt-get update && apt-get install dataset-fashion-mnist (or set FASHION_MNIST_DIR)" install_fashion_mnist
step "this project (editable, [all,dev])" "see pip's message above" install_project
step "import check" "one of the packages above failed to import; rerun make install" check_stack
touch "$STAMP"
echo "==> [install] all done in $(( $(date +%s) - T_ALL )) s"
