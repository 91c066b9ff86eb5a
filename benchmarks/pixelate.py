"""How many mosaic blocks across a face still let a recognizer match it? (the pixelate default)

A mosaic with many blocks keeps identity: the audit's recognizer (the exact dlib ResNet, L2 < 0.6 =
same person) matched an audience member through ``--mode pixelate`` on hamilton frame 246. For each
block count this measures, on LFW's matched pairs (``pairs.txt``, the first N of each fold), how
often the second photo, pixelated the way the renderer does it (``render.classic.Pixelate`` on the
face's region, head reach), is still matched to the first, unpixelated one; the mismatched pairs
give the chance level (two different people under the threshold). Landmarks come from the
unpixelated photo, as in the audit (it aligns the anonymized frame with the original's landmarks).

    python benchmarks/pixelate.py [--pairs 100] [--blocks 3,4,5,6,8,10,12]

A setting is safe when its match rate is at the chance level; the default and the minimum of
``--blocks`` follow from this table (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path[:1]:
    sys.path.insert(0, str(REPO))

from deid_edit.config import DetectConfig, RenderConfig  # noqa: E402
from deid_edit.detect import create_detector  # noqa: E402
from deid_edit.embed import SAME_PERSON_L2, FaceEmbedder, align_faces, distance  # noqa: E402
from deid_edit.plan import region_top  # noqa: E402
from deid_edit.render.classic import Pixelate, Solid  # noqa: E402
from deid_edit.types import FaceRegion  # noqa: E402

LFW = REPO.parent / "shared" / "faces" / "lfw"


def read_pairs(path: Path, per_fold: int) -> list[tuple[str, str, bool]]:
    """The first ``per_fold`` matched and mismatched pairs of each of the 10 folds."""
    lines = [ln for ln in path.read_text().split("\n")[1:] if ln.strip()]
    out = []
    for i, line in enumerate(lines):
        if (i % 300) >= per_fold:
            continue
        f = line.split("\t")
        if len(f) == 3:
            a, b = (f[0], int(f[1])), (f[0], int(f[2]))
        else:
            a, b = (f[0], int(f[1])), (f[2], int(f[3]))
        out.append((*(f"{n}/{n}_{k:04d}" for n, k in (a, b)), len(f) == 3))
    return out


def centre_face(detector, img: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(box, landmarks) of the detection nearest the image centre."""
    (det,) = detector.detect([img], [0], 1.0, 0.3)
    if not len(det) or det.landmarks is None:
        return None
    h, w = img.shape[:2]
    c = (det.boxes[:, :2] + det.boxes[:, 2:]) / 2
    i = int(np.argmin(np.hypot(c[:, 0] - w / 2, c[:, 1] - h / 2)))
    return det.boxes[i], det.landmarks[i]


def pixelated(img: np.ndarray, box: np.ndarray, lm: np.ndarray, blocks: int) -> np.ndarray:
    """``img`` with its face pixelated as the renderer does (the plan's region box, head reach);
    ``blocks`` 0 paints the region solid instead: the floor, what context alone (hair, clothes,
    background) lets the recognizer match."""
    region_box = box.copy()
    region_box[1] = region_top(box)
    region = FaceRegion(identity_id=0, track_id=0, box=region_box, landmarks=lm, observed=True)
    out = img.copy()
    if blocks == 0:
        Solid().apply(out, [region], RenderConfig(mode="solid"))
    else:
        Pixelate().apply(out, [region], RenderConfig(mode="pixelate", blocks=blocks))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lfw", type=Path, default=LFW)
    ap.add_argument("--pairs", type=int, default=100, help="matched (and mismatched) pairs per fold (300 = all 6,000)")
    ap.add_argument("--blocks", default="3,4,5,6,7,8,10,12,16")
    args = ap.parse_args(argv)
    blocks = [int(b) for b in args.blocks.split(",")]
    detector = create_detector(DetectConfig(device="cpu"))
    embedder = FaceEmbedder(device="cpu", recognizer="exact")
    pairs = read_pairs(args.lfw / "pairs.txt", args.pairs)
    cache: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray] | None] = {}

    def load(key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        if key not in cache:
            name = key.split("/")[0]
            img = cv2.imread(str(args.lfw / "lfw_deepfunneled" / name / f"{key.split('/')[1]}.jpg"))
            face = None if img is None else centre_face(detector, img[:, :, ::-1].copy())
            cache[key] = None if face is None else (img[:, :, ::-1].copy(), *face)
        return cache[key]

    rows = [-1, 0, *blocks]  # -1: the photo itself; 0: a solid mask (the floor)
    same_d: dict[int, list[float]] = {b: [] for b in rows}
    diff_d: list[float] = []
    sizes = []
    for a, b, same in pairs:
        fa, fb = load(a), load(b)
        if fa is None or fb is None:
            continue
        da = embedder.embed(align_faces(fa[0], fa[2][None]))
        if not same:
            diff_d.append(float(distance(da, embedder.embed(align_faces(fb[0], fb[2][None])))[0]))
            continue
        sizes.append(float(fb[1][2] - fb[1][0]))
        chips = [align_faces(fb[0], fb[2][None])[0]] + [align_faces(pixelated(fb[0], fb[1], fb[2], n), fb[2][None])[0] for n in rows[1:]]
        d = distance(np.repeat(da, len(chips), 0), embedder.embed(np.stack(chips)))
        for n, v in zip(rows, d.tolist()):
            same_d[n].append(v)
    chance = float(np.mean(np.asarray(diff_d) < SAME_PERSON_L2))
    print(f"LFW: {len(sizes)} matched pairs (face box median {np.median(sizes):.0f} px), {len(diff_d)} mismatched")
    print(f"chance level (different people matched at L2 < {SAME_PERSON_L2}): {100 * chance:.1f}%")
    print()
    print(f"{'blocks':>6}  {'matched %':>9}  {'median L2':>9}")
    for n in rows:
        d = np.asarray(same_d[n])
        label = {-1: "none", 0: "solid"}.get(n, str(n))
        print(f"{label:>6}  {100 * float(np.mean(d < SAME_PERSON_L2)):9.1f}  {float(np.median(d)):9.3f}")
    print("\nblocks = mosaic blocks across the padded face width (--blocks); none = the photo itself; solid = the region")
    print("painted in one colour: what context alone (hair, clothes, background) lets the recognizer match.")


if __name__ == "__main__":
    main()
