"""Who is who: hand labels of the people in the identity benchmark clips, and the tools to make them.

Why: identities are scored against people, and a benchmark of adult photos said 1.0 while one
identity held a father and two of his sons. These labels were made by people looking at frames.
Each clip has ``benchmarks/labels/<clip stem>.json``:

    {"clip": "friends_coldopen_6people.mp4", "sha256": "...",
     "people": {"A": "woman, long light-brown hair ...", ...},
     "points": [[frame, x, y, "A"], ...]}

A point says "the face at (x, y) in this frame is person A". A track of any plan belongs to the
person whose points its boxes contain at those frames; a track holding points of two people is a
tracker error (reported, never counted as a link); a track holding no point is unlabelled (not
scored). Person names starting with ``x`` are extras seen once or twice; ``?`` points are faces
nobody could tell (never scored). Frames are upright and numbered in presentation order
(``deid_edit.io.decode.VideoReader``).

Commands (from the repository root):

    python benchmarks/labels/people.py propose CLIP --plan PLAN --out DIR   # sheets of numbered tracks to label
    python benchmarks/labels/people.py adopt CLIP --tracks DIR/tracks.json --answers ANSWERS.json
    python benchmarks/labels/people.py draw CLIP --out DIR                  # the labels drawn, to re-check
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path[:1]:
    sys.path.insert(0, str(REPO))

from deid_edit.models import sha256_of  # noqa: E402
from deid_edit.plan import Plan, load_plan  # noqa: E402
from deid_edit.types import Track  # noqa: E402

sys.path.insert(0, str(REPO / "benchmarks" / "heads"))
from heads import read_frames  # noqa: E402

HERE = Path(__file__).resolve().parent
FOOTAGE = REPO.parent / "shared" / "footage"
MIN_SIDE = 20  # tracks whose largest face is smaller are not proposed (nobody can tell who it is)


def label_path(clip: str | Path) -> Path:
    return HERE / f"{Path(clip).stem}.json"


def resolve(clip: str | Path) -> Path:
    p = Path(clip)
    return p if p.exists() else FOOTAGE / p.name


def load_people(clip: str | Path) -> dict[str, Any]:
    """The labels of ``clip``; refuses labels made for another file."""
    data = json.loads(label_path(clip).read_text())
    path = resolve(clip)
    if path.exists() and sha256_of(path) != data["sha256"]:
        raise SystemExit(f"{path}: not the file these labels were made for (sha256 differs)")
    return data


def has_people(clip: str | Path) -> bool:
    return label_path(clip).is_file() and resolve(clip).is_file()


def _contains(box: np.ndarray, x: float, y: float) -> bool:
    return bool(box[0] <= x <= box[2] and box[1] <= y <= box[3])


def track_people(plan: Plan, points: Sequence[Sequence[Any]]) -> dict[int, set[str]]:
    """Track id -> the labelled people whose points fall in its detected boxes (``?`` left out).

    A point belongs to the track, among those whose box contains it at that frame, whose box centre
    is nearest: a face half hidden behind another lies inside both boxes.
    """
    by_frame: dict[int, list[tuple[float, float, str]]] = {}
    for f, x, y, who in points:
        if who != "?":
            by_frame.setdefault(int(f), []).append((float(x), float(y), str(who)))
    out: dict[int, set[str]] = {}
    for f, pts in by_frame.items():
        here = [(t, t.boxes[f - t.start]) for t in plan.tracks if t.start <= f < t.end and t.observed[f - t.start]]
        for x, y, who in pts:
            inside = [(float(np.hypot((b[0] + b[2]) / 2 - x, (b[1] + b[3]) / 2 - y)), t.track_id) for t, b in here if _contains(b, x, y)]
            if inside:
                out.setdefault(min(inside)[1], set()).add(who)
    return out


# -- making labels -----------------------------------------------------------------------------
def _picks(t: Track, n: int = 3) -> list[int]:
    """Up to ``n`` sample indices spread over a track: the largest detected face of each part."""
    seen = np.flatnonzero(t.observed)
    if not len(seen):
        seen = np.arange(len(t.frames))
    parts = [p for p in np.array_split(seen, min(n, len(seen))) if len(p)]
    sides = np.minimum(t.boxes[:, 2] - t.boxes[:, 0], t.boxes[:, 3] - t.boxes[:, 1])
    return [int(p[np.argmax(sides[p])]) for p in parts]


def _crop(image: np.ndarray, box: np.ndarray, size: int = 128) -> np.ndarray:
    """A square crop 2.4x the face box around its centre, the box outlined in green."""
    h, w = image.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = max(box[2] - box[0], box[3] - box[1]) * 1.2 + 4
    x0, y0, x1, y1 = int(cx - half), int(cy - half), int(cx + half), int(cy + half)
    pad = max(0, -x0, -y0, x1 - w, y1 - h)
    img = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(40, 40, 40)) if pad else image
    crop = img[y0 + pad : y1 + pad, x0 + pad : x1 + pad].copy()
    s = size / crop.shape[0]
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_CUBIC if s > 1 else cv2.INTER_AREA)
    b = ((box - [x0, y0, x0, y0]) * s).astype(int)
    cv2.rectangle(crop, (int(b[0]), int(b[1])), (int(b[2]), int(b[3])), (0, 255, 0), 1)
    return crop


def cmd_propose(args: argparse.Namespace) -> None:
    """Sheets of numbered tracks (three crops each, shot and time) and tracks.json with their points."""
    clip = resolve(args.clip)
    plan = load_plan(args.plan)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tracks = [
        t
        for t in plan.tracks
        if not plan.is_weak(t.track_id)
        and float(np.max(np.minimum(t.boxes[:, 2] - t.boxes[:, 0], t.boxes[:, 3] - t.boxes[:, 1]))) >= MIN_SIDE
    ]
    want: dict[int, list[tuple[int, int]]] = {}
    for n, t in enumerate(tracks):
        for j in _picks(t):
            want.setdefault(int(t.frames[j]), []).append((n, j))
    crops: dict[int, list[np.ndarray]] = {}
    fps = float(plan.video.avg_rate)
    for index, image in read_frames(clip, sorted(want)):
        for n, j in want[index]:
            crops.setdefault(n, []).append(_crop(image, tracks[n].boxes[j]))
    listing = []
    for n, t in enumerate(tracks):
        pts = [[int(t.frames[j]), *map(lambda v: round(float(v), 1), ((t.boxes[j][:2] + t.boxes[j][2:]) / 2))] for j in _picks(t)]
        listing.append({"n": n, "track": t.track_id, "shot": t.shot_index, "time": round(t.start / fps, 1), "points": pts})
    (out / "tracks.json").write_text(json.dumps({"clip": clip.name, "tracks": listing}, indent=1))
    per_sheet = args.per_sheet
    for s in range(0, len(tracks), per_sheet):
        rows = []
        for n in range(s, min(s + per_sheet, len(tracks))):
            tiles = crops[n] + [np.zeros((128, 128, 3), np.uint8)] * (3 - len(crops[n]))
            head = np.full((128, 90, 3), 255, np.uint8)
            cv2.putText(head, f"#{n}", (4, 40), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 2)
            cv2.putText(head, f"s{tracks[n].shot_index}", (4, 75), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
            cv2.putText(head, f"{tracks[n].start / fps:.1f}s", (4, 100), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
            rows.append(np.hstack([head, *tiles]))
        half = (len(rows) + 1) // 2
        left, right = rows[:half], rows[half:]
        right += [np.full_like(rows[0], 255)] * (len(left) - len(right))
        sheet = np.hstack([np.vstack(left), np.full((128 * len(left), 12, 3), 255, np.uint8), np.vstack(right)])
        cv2.imwrite(str(out / f"sheet_{s // per_sheet:02d}.png"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"{len(tracks)} tracks on {(len(tracks) + per_sheet - 1) // per_sheet} sheets in {out}")


def cmd_adopt(args: argparse.Namespace) -> None:
    """Turn a labeller's answers ({"people": {...}, "tracks": {"n": "A", ...}}) into the label file."""
    clip = resolve(args.clip)
    listing = json.loads(Path(args.tracks).read_text())["tracks"]
    answers = json.loads(Path(args.answers).read_text())
    points = []
    for item in listing:
        who = answers["tracks"].get(str(item["n"]))
        if who is None or who in ("mixed", "none"):
            continue  # a track holding two people or no face proves nothing
        points += [[f, x, y, who] for f, x, y in item["points"]]
    data = {
        "clip": clip.name,
        "sha256": sha256_of(clip),
        "people": answers["people"],
        "points": sorted(points),
        "labelled_by": answers.get("labelled_by", "people looking at frames"),
    }
    label_path(clip).write_text(json.dumps(data, indent=0) + "\n")
    print(f"{label_path(clip)}: {len(points)} points, {len(set(p[3] for p in points))} names")


def cmd_from_csv(args: argparse.Namespace) -> None:
    """Points from a data set's per-frame face ids (frame, "face", id, x1, y1, x2, y2, flag), every Nth frame."""
    import csv

    clip = resolve(args.clip)
    names = dict(n.split("=", 1) for n in args.name)
    points = []
    with open(args.csv, newline="") as fh:
        for row in csv.reader(fh):
            f, who, box = int(row[0]), row[2], [float(v) for v in row[3:7]]
            if f % args.every == 0 and who in names:
                points.append([f, round((box[0] + box[2]) / 2, 1), round((box[1] + box[3]) / 2, 1), who])
    data = {
        "clip": clip.name,
        "sha256": sha256_of(clip),
        "people": names,
        "points": sorted(points),
        "labelled_by": f"the data set's face ids ({Path(args.csv).name}), every {args.every}th frame; names checked by looking at frames",
    }
    label_path(clip).write_text(json.dumps(data, indent=0) + "\n")
    print(f"{label_path(clip)}: {len(points)} points")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("propose")
    p.add_argument("clip")
    p.add_argument("--plan", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--per-sheet", type=int, default=24)
    p.set_defaults(func=cmd_propose)
    a = sub.add_parser("adopt")
    a.add_argument("clip")
    a.add_argument("--tracks", required=True)
    a.add_argument("--answers", required=True)
    a.set_defaults(func=cmd_adopt)
    c = sub.add_parser("from-csv")
    c.add_argument("clip")
    c.add_argument("--csv", required=True)
    c.add_argument("--every", type=int, default=3)
    c.add_argument("--name", action="append", default=[], help="ID=description, for each id to keep")
    c.set_defaults(func=cmd_from_csv)
    args = ap.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
