#!/usr/bin/env bash
# Create a separate virtual environment holding deface 1.5.0 (the comparison baseline of
# benchmarks/leaks.py --deface). It is kept apart from the project's .venv because deface pulls in
# its own onnxruntime, imageio and imageio-ffmpeg (whose wheel bundles an ffmpeg binary).
#
# Usage: benchmarks/deface_venv.sh [VENV_DIR]      (default: $DEFACE_VENV or /tmp/deface-venv)
# Then:  python benchmarks/leaks.py --deface --deface-venv VENV_DIR
set -euo pipefail

VENV="${1:-${DEFACE_VENV:-/tmp/deface-venv}}"
PYTHON="${PYTHON:-python3}"

if [ -x "$VENV/bin/deface" ] && "$VENV/bin/python" -c 'import importlib.metadata as m, sys; sys.exit(m.version("deface") != "1.5.0")' 2>/dev/null; then
    echo "deface 1.5.0 already installed in $VENV"
    exit 0
fi

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "deface==1.5.0"
"$VENV/bin/deface" --version || true
echo "deface installed: $VENV/bin/deface"
