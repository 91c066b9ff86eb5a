"""Mask jitter before and after temporal smoothing, per clip (a printed table, nothing asserted).

Jitter is the mean frame-to-frame change of the box centre relative to the box size, over pairs of
consecutive frames in which the face was detected. "raw" uses the detector's boxes as the tracker
associated them; "smoothed" uses the plan's final boxes on the same frames. Tracks never detected
above --threshold (weak tracks: a lamp, a plant) are left out. Usage:

    python benchmarks/jitter.py [CLIP ...]     # default: talkinghead_1..5 and portrait_driving_d6
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deid_edit import analyze  # noqa: E402
from deid_edit.config import AnalyzeConfig  # noqa: E402
from deid_edit.pipeline import track_detections  # noqa: E402

FOOTAGE = Path(__file__).resolve().parents[1].parent / "shared" / "footage"
DEFAULT = [f"talkinghead_{i}.mp4" for i in range(1, 6)] + ["portrait_driving_d6.mp4"]


def jitter(boxes: np.ndarray) -> np.ndarray:
    """Per consecutive pair: centre displacement / mean of the two box sizes (sqrt of area)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    size = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))
    return np.linalg.norm(np.diff(centre, axis=0), axis=1) / ((size[1:] + size[:-1]) / 2)


def measure(path: Path, cfg: AnalyzeConfig) -> tuple[int, float, float]:
    plan = analyze(path, cfg)
    raws = {r.track_id: r for r in track_detections(plan.detections, plan.shots, cfg)}  # analyze's call: the plan's track ids
    before, after = [], []
    for t in plan.tracks:
        raw = raws[t.track_id]
        if max(raw.scores) < cfg.detect.threshold:
            continue  # a weak track only (maybe no face at all: talkinghead_2's lamp); faces are measured
        frames = np.asarray(raw.frames)
        pairs = np.nonzero(np.diff(frames) == 1)[0]
        if not len(pairs):
            continue
        rb = np.asarray(raw.boxes)
        fb = t.boxes[frames - t.start]
        before.append(jitter(rb)[pairs])
        after.append(jitter(fb)[pairs])
    b = float(np.concatenate(before).mean()) if before else float("nan")
    a = float(np.concatenate(after).mean()) if after else float("nan")
    return plan.frame_count, b, a


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="*", default=DEFAULT)
    args = ap.parse_args()
    cfg = AnalyzeConfig()
    print(f"| {'clip':28} | frames | raw jitter | smoothed | ratio |")
    print("|------------------------------|--------|------------|----------|-------|")
    for name in args.clips:
        path = Path(name) if Path(name).exists() else FOOTAGE / name
        n, b, a = measure(path, cfg)
        print(f"| {path.name:28} | {n:6d} | {b * 100:9.2f}% | {a * 100:7.2f}% | {a / b:5.2f} |")


if __name__ == "__main__":
    main()
