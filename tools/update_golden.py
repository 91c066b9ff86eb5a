"""Regenerate tests/golden/sample_plan.json after an intended change of the analysis.

The golden plan is the analysis of the generated sample clip (40 frames, cut at 20) that
tests/test_plan.py compares against; review the diff of the JSON before committing it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from deid_edit import analyze, save_plan
from deid_edit.sample import make_sample_clip

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden" / "sample_plan.json"

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "sample.mp4"
        make_sample_clip(clip, frames=40, cut_frame=20)
        save_plan(analyze(clip), GOLDEN)
    print(GOLDEN)
