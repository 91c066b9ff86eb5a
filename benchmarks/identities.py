"""Track-to-identity linking quality on a multi-shot clip assembled from real footage.

Input: single-person clips of ../shared/footage (each clip is one person), cut into short segments
and interleaved with hard cuts so people return several times. Output: a printed table with
pairwise and B-cubed precision/recall of tracks -> identities (ground truth: the source clip of
the shot a track lies in). Usage:

    python benchmarks/identities.py [--segment 20] [--size 384]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from fractions import Fraction
from itertools import combinations
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deid_edit import analyze  # noqa: E402
from deid_edit.plan import Plan  # noqa: E402

FOOTAGE = Path(__file__).resolve().parents[1].parent / "shared" / "footage"
PEOPLE = ["talkinghead_1.mp4", "talkinghead_2.mp4", "talkinghead_3.mp4", "talkinghead_4.mp4", "portrait_driving_d6.mp4"]
ORDER = [0, 1, 2, 0, 3, 1, 4, 2, 0, 3, 4, 1]  # people return several times, never twice in a row


def build_multishot(out: Path, segment: int = 20, size: int = 384, footage: Path = FOOTAGE) -> list[tuple[int, int, int]]:
    """Write the interleaved clip; returns (start, end, person) per shot."""
    readers = {i: av.open(str(footage / name)).decode(video=0) for i, name in enumerate(PEOPLE)}
    shots = []
    with av.open(str(out), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width = s.height = size
        s.pix_fmt = "yuv420p"
        s.options = {"crf": "18", "preset": "veryfast"}
        n = 0
        for person in ORDER:
            start = n
            for _ in range(segment):
                f = next(readers[person]).to_ndarray(format="rgb24", width=size, height=size)
                frame = av.VideoFrame.from_ndarray(f, format="rgb24")
                frame.pts, frame.time_base = n, Fraction(1, 25)
                for p in s.encode(frame):
                    c.mux(p)
                n += 1
            shots.append((start, n, person))
        for p in s.encode(None):
            c.mux(p)
    return shots


def scores(plan: Plan, shots: list[tuple[int, int, int]]) -> dict[str, float]:
    """Pairwise and B-cubed precision/recall of the plan's identities against the true people."""
    truth = {}
    for t in plan.tracks:
        mid = (t.start + t.end) // 2
        truth[t.track_id] = next(p for a, b, p in shots if a <= mid < b)
    pred = {tid: i.identity_id for i in plan.identities for tid in i.track_ids}
    ids = sorted(truth)
    tp = fp = fn = 0
    for a, b in combinations(ids, 2):
        same_t, same_p = truth[a] == truth[b], pred[a] == pred[b]
        tp += same_t and same_p
        fp += same_p and not same_t
        fn += same_t and not same_p
    bp = sum(
        sum(1 for y in ids if pred[y] == pred[x] and truth[y] == truth[x]) / sum(1 for y in ids if pred[y] == pred[x]) for x in ids
    ) / len(ids)
    br = sum(
        sum(1 for y in ids if pred[y] == pred[x] and truth[y] == truth[x]) / sum(1 for y in ids if truth[y] == truth[x]) for x in ids
    ) / len(ids)
    return {
        "tracks": len(ids),
        "identities": len(set(pred.values())),
        "people": len(set(truth.values())),
        "pair_precision": tp / (tp + fp) if tp + fp else 1.0,
        "pair_recall": tp / (tp + fn) if tp + fn else 1.0,
        "bcubed_precision": bp,
        "bcubed_recall": br,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segment", type=int, default=20)
    ap.add_argument("--size", type=int, default=384)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "multishot.mp4"
        shots = build_multishot(clip, args.segment, args.size)
        plan = analyze(clip)
        found = [(s.start, s.end) for s in plan.shots]
        print(f"shots: {len(shots)} true, {len(found)} found; cut frames match: {[a for a, _, _ in shots] == [a for a, _ in found]}")
        r = scores(plan, shots)
        print(" | ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))


if __name__ == "__main__":
    main()
