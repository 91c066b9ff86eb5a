"""Track-to-identity linking quality on real footage: a multi-shot clip assembled from
../shared/footage and hamilton_stage.mp4.

1. Multi-shot: single-person clips (each clip is one person), cut into short segments and
   interleaved with hard cuts so people return several times; ground truth is the source clip of
   the shot a track lies in.
2. hamilton_stage.mp4 (4 shots, 26 tracks: a performer in two shots, a pianist, a dim audience, the
   front row): ground truth labelled by hand (``HAMILTON_PEOPLE``), see there.

Output: pairwise and B-cubed precision/recall of tracks -> identities. Usage:

    python benchmarks/identities.py [--segment 20] [--size 384] [--skip-multishot]
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


# People of hamilton_stage.mp4 seen in more than one track, labelled by a person looking at the
# frames (640x360): each is a list of (frame, x, y) points on that person's face; a track belongs to
# the person whose point its box contains at that frame. Every other track is its own person.
# * the performer (Lin-Manuel Miranda): the wide shot 0-19 and the close-up 82-210;
# * the pianist (curly hair, beard): small at the piano in shot 0-19, then in profile in the
#   foreground of the audience shot 20-81, leaving and re-entering the frame (the match of the
#   small shot-0 face to the profile is a judgement from hair, beard and clothes, not certain);
# * three audience members in the dim audience shot 20-81 whose faces the detector loses for 3-11
#   frames while the camera pans (positions follow the pan: +50 px in x).
# The front row of 211-274 (a different camera, the Obamas and guests) shares no one with the
# audience shot as far as can be seen; they count as other people.
HAMILTON_PEOPLE: dict[str, list[tuple[int, float, float]]] = {
    "performer": [(10, 547, 74), (146, 230, 70)],
    "pianist": [(10, 64, 202), (38, 395, 241), (73, 527, 188)],
    "audience A": [(25, 300, 114), (62, 372, 137)],
    "audience B": [(28, 133, 40), (60, 193, 60)],
    "audience C": [(25, 266, 75), (62, 344, 87)],
}


def hamilton_truth(plan: Plan) -> dict[int, str]:
    """Track id -> person for hamilton_stage.mp4 (``HAMILTON_PEOPLE``; others are their own person)."""
    truth = {t.track_id: f"track {t.track_id}" for t in plan.tracks}
    for person, points in HAMILTON_PEOPLE.items():
        for frame, x, y in points:
            for t in plan.tracks:
                if t.start <= frame < t.end:
                    x0, y0, x1, y1 = t.boxes[frame - t.start]
                    if x0 <= x <= x1 and y0 <= y <= y1:
                        truth[t.track_id] = person
    return truth


def shot_truth(plan: Plan, shots: list[tuple[int, int, int]]) -> dict[int, object]:
    """Track id -> person for the multi-shot clip: the source clip of the shot it lies in."""
    return {t.track_id: next(p for a, b, p in shots if a <= (t.start + t.end) // 2 < b) for t in plan.tracks}


def scores(plan: Plan, truth: dict[int, object]) -> dict[str, float]:
    """Pairwise and B-cubed precision/recall of the plan's identities against the true people."""
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
    ap.add_argument("--skip-multishot", action="store_true")
    args = ap.parse_args()

    def show(r: dict[str, float]) -> None:
        print("  " + " | ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))

    if not args.skip_multishot:
        with tempfile.TemporaryDirectory() as tmp:
            clip = Path(tmp) / "multishot.mp4"
            shots = build_multishot(clip, args.segment, args.size)
            plan = analyze(clip)
            found = [(s.start, s.end) for s in plan.shots]
            match = [a for a, _, _ in shots] == [a for a, _ in found]
            print(f"multi-shot: {len(shots)} shots true, {len(found)} found; cut frames match: {match}")
            show(scores(plan, shot_truth(plan, shots)))
    plan = analyze(FOOTAGE / "hamilton_stage.mp4")
    truth = hamilton_truth(plan)
    found = sorted({p for p in truth.values() if not p.startswith("track ")})
    print(f"hamilton_stage.mp4: {len(plan.shots)} shots; labelled people found in tracks: {', '.join(found)}")
    show(scores(plan, truth))
    identifiable = sum(t.embedding is not None for t in plan.tracks)
    print(f"  ({identifiable} of {len(plan.tracks)} tracks identifiable; the others are too dark, small or turned: only stitched)")


if __name__ == "__main__":
    main()
