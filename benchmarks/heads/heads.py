"""The hand-checked head set: which frames are labelled, the labels, and pictures to check them by eye.

Why: a leak reference built from frontal face detectors cannot see what a frontal detector misses
(profiles, heads cut by the frame edge, the last frame before a cut). These labels were made by
people looking at frames. Each clip has ``benchmarks/heads/<clip stem>.json``:

    {"clip": "hamilton_stage.mp4", "sha256": "...", "frames": {"57": [{"box": [x1, y1, x2, y2],
     "kind": "profile edge"}], "58": [], ...}}

Every listed frame was looked at; an empty list means "no visible face there". A box covers the
*visible face* of one head (hairline to chin, ear or cheek to cheek or nose tip, clipped to the
frame), frontal, three-quarter, profile, cut by the edge, dim, blurred or small; the back of a head
with no face visible is not labelled. Frames are upright (rotation applied) and numbered in
presentation order, as ``deid_edit.io.decode.VideoReader`` yields them.

Commands (run from the repository root):

    python benchmarks/heads/heads.py select CLIP --plan PLAN [--seconds S]   # frames to label, as JSON
    python benchmarks/heads/heads.py draw CLIP [--frames 57,58] [--out DIR] [--plan PLAN]
    python benchmarks/heads/heads.py sheet CLIP --out FILE.png [--frames ...]

``draw`` writes one PNG per labelled frame with its boxes numbered (and, with ``--plan``, the plan's
covered mask shaded), so anyone can re-check the labels and the misses. ``benchmarks/leaks.py
--heads`` scores plans (and deface) against these labels.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path[:1]:
    sys.path.insert(0, str(REPO))

from deid_edit.config import RenderConfig  # noqa: E402
from deid_edit.geometry import iou_matrix  # noqa: E402
from deid_edit.io.decode import VideoReader  # noqa: E402
from deid_edit.models import sha256_of  # noqa: E402
from deid_edit.plan import Plan, load_plan  # noqa: E402
from deid_edit.render.shapes import covered_mask  # noqa: E402

HERE = Path(__file__).resolve().parent
FOOTAGE = REPO.parent / "shared" / "footage"
EVERY = 10  # every 10th frame is labelled
NEAR = 3  # and every frame within 3 frames of a cut or of a track's start or end
COVER_OK = 0.9  # a head is leaked when less than 90 % of its visible face area is covered
# the clip set; friends is labelled over its first 40 s only
CLIPS: dict[str, float | None] = {
    "hamilton_stage.mp4": None,
    "crowd_small_faces_1080p.mp4": None,
    "studio_interview_2people.mp4": None,
    "film_dark_vfr_3shots.mp4": None,
    "talkshow_host.mp4": None,
    "phone_hevc60_rotated.MOV": None,
    "plasticbubble_4people.mp4": None,
    "msdwild_father_2boys.mp4": None,
    "friends_coldopen_6people.mp4": 40.0,
}


def label_path(clip: str | Path) -> Path:
    """Where the labels of ``clip`` live."""
    return HERE / f"{Path(clip).stem}.json"


def resolve(clip: str | Path) -> Path:
    """A clip name in ../shared/footage, or a path."""
    p = Path(clip)
    return p if p.exists() else FOOTAGE / p.name


def frames_to_label(plan: Plan, limit: int | None = None) -> list[int]:
    """Every 10th frame, and every frame within ``NEAR`` of a cut or of where a track of ``plan``
    starts or ends (where masks begin and end is where faces slip through)."""
    n = plan.frame_count if limit is None else min(limit, plan.frame_count)
    chosen = set(range(0, n, EVERY))
    edges = [s.start for s in plan.shots[1:]]  # a cut between frame c-1 and c
    for c in edges:
        chosen.update(range(c - NEAR, c + NEAR))
    for t in plan.tracks:
        for f in (t.start, t.end - 1):
            chosen.update(range(f - NEAR, f + NEAR + 1))
    return sorted(f for f in chosen if 0 <= f < n)


def load_labels(clip: str | Path, path: str | Path | None = None) -> dict[str, Any]:
    """The labels of ``clip`` (or those in ``path``), with frame numbers as int keys."""
    data = json.loads(Path(path or label_path(clip)).read_text())
    data["frames"] = {int(k): v for k, v in data["frames"].items()}
    return data


def head_boxes(entry: Sequence[dict[str, Any]]) -> np.ndarray:
    return np.asarray([h["box"] for h in entry], np.float32).reshape(-1, 4)


def face_area(box: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The visible face area of a labelled box: its inscribed ellipse (a face is round, a box has
    corners of hair or background), clipped to the frame. Boolean mask of the frame's size."""
    h, w = hw
    m = np.zeros(hw, np.uint8)
    x1, y1, x2, y2 = (float(v) for v in box)
    centre = (int(round((x1 + x2) / 2 * 4)), int(round((y1 + y2) / 2 * 4)))
    axes = (max(1, int(round((x2 - x1) / 2 * 4))), max(1, int(round((y2 - y1) / 2 * 4))))
    cv2.ellipse(m, centre, axes, 0, 0, 360, 1, -1, lineType=cv2.LINE_8, shift=2)
    return m.astype(bool)


def coverage(box: np.ndarray, mask: np.ndarray | None) -> float:
    """Share of a labelled face's visible area that ``mask`` covers (1.0 when none is visible)."""
    area = face_area(box, mask.shape if mask is not None else (1, 1))
    total = int(area.sum())
    if total == 0:
        return 1.0
    if mask is None:
        return 0.0
    return float(np.count_nonzero(area & mask)) / total


HEAD_ALLOWED = 0.5  # false mask: covered pixels outside every labelled face box grown by this much on each side (the head)


@dataclass
class HeadScore:
    """One system's numbers on one clip's labelled frames."""

    frames: int = 0
    heads: int = 0
    leaked: int = 0
    longest: int = 0  # most consecutive (adjacent) labelled frames in which one head leaked
    false_pct_sum: float = 0.0
    leaks: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "labelled_frames": self.frames,
            "heads": self.heads,
            "leaked": self.leaked,
            "longest_run": self.longest,
            "false_mask_pct": round(self.false_pct_sum / self.frames, 3) if self.frames else 0.0,
            "leaks": self.leaks,
        }


def score_heads(labels: dict[int, list[dict[str, Any]]], masks: Iterable[tuple[int, np.ndarray | None]]) -> HeadScore:
    """Leaked heads (visible face area covered under ``COVER_OK``) of one system over the labelled
    frames; ``masks`` yields (frame, covered mask) and may include frames that are not labelled."""
    s = HeadScore()
    prev_frame, prev_leaks = -2, []  # leaked (box, run) of the previous labelled frame
    for index, mask in masks:
        if index not in labels:
            continue
        heads = labels[index]
        now = []
        for head in heads:
            box = np.asarray(head["box"], np.float32)
            cov = coverage(box, mask)
            s.heads += 1
            if cov < COVER_OK:
                s.leaked += 1
                run = 1
                if prev_frame == index - 1:
                    runs = [r for b, r in prev_leaks if iou_matrix(b[None], box[None])[0, 0] > 0.3]
                    run += max(runs, default=0)
                now.append((box, run))
                s.longest = max(s.longest, run)
                s.leaks.append(
                    {"frame": index, "box": [round(float(v), 1) for v in box], "covered": round(cov, 3), "kind": head.get("kind", "")}
                )
        if mask is not None:
            allowed = np.zeros(mask.shape, bool)
            h, w = mask.shape
            for head in heads:
                x1, y1, x2, y2 = (float(v) for v in head["box"])
                gx, gy = (x2 - x1) * HEAD_ALLOWED, (y2 - y1) * HEAD_ALLOWED
                allowed[max(0, int(y1 - gy)) : min(h, int(np.ceil(y2 + gy))), max(0, int(x1 - gx)) : min(w, int(np.ceil(x2 + gx)))] = True
            s.false_pct_sum += 100.0 * float(np.count_nonzero(mask & ~allowed)) / mask.size
        s.frames += 1
        prev_frame, prev_leaks = index, now
    return s


def has_labels(clip: str | Path) -> bool:
    return label_path(clip).is_file()


def read_frames(clip: Path, wanted: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """(index, upright RGB frame) for the ``wanted`` frames, in order."""
    want = set(wanted)
    last = max(want) if want else -1
    reader = VideoReader(clip, scale=1.0)
    try:
        for frame in reader.frames():
            if frame.index in want:
                yield frame.index, frame.image
            if frame.index >= last:
                break
    finally:
        reader.close()


def draw_frame(
    image: np.ndarray, heads: Sequence[dict[str, Any]], covered: np.ndarray | None = None, grid: bool = True, zoom: float = 1.0
) -> np.ndarray:
    """BGR picture of a frame with its labelled heads numbered; the covered mask shaded in blue;
    a leaked head (coverage under 90 %) drawn red, a covered one green, unscored ones yellow.
    ``zoom`` enlarges the picture; the grid's numbers stay in source pixels."""
    img = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    h, w = img.shape[:2]
    if covered is not None:
        tint = img.copy()
        tint[covered] = (0.5 * tint[covered] + (120, 40, 0)).clip(0, 255).astype(np.uint8)
        img = tint
    if zoom != 1.0:
        img = cv2.resize(img, (int(round(w * zoom)), int(round(h * zoom))), interpolation=cv2.INTER_CUBIC)
    if grid:
        step = 50 if max(h, w) <= 1000 else 100
        for x in range(step, w, step):
            cv2.line(img, (int(x * zoom), 0), (int(x * zoom), 6), (255, 255, 255), 1)
            cv2.putText(img, str(x), (int(x * zoom) + 2, 14), cv2.FONT_HERSHEY_PLAIN, 0.8, (255, 255, 255), 1)
        for y in range(step, h, step):
            cv2.line(img, (0, int(y * zoom)), (6, int(y * zoom)), (255, 255, 255), 1)
            cv2.putText(img, str(y), (8, int(y * zoom) + 4), cv2.FONT_HERSHEY_PLAIN, 0.8, (255, 255, 255), 1)
    for k, head in enumerate(heads):
        b = np.round(np.asarray(head["box"], np.float32) * zoom).astype(int)
        colour = (0, 255, 255)
        if covered is not None:
            colour = (0, 0, 255) if coverage(np.asarray(head["box"]), covered) < COVER_OK else (0, 255, 0)
        cv2.rectangle(img, (b[0], b[1]), (b[2], b[3]), colour, 1 if min(b[2] - b[0], b[3] - b[1]) < 30 else 2)
        cv2.putText(img, str(k), (b[0], max(12, b[1] - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
    return img


def plan_mask(plan: Plan, index: int, hw: tuple[int, int]) -> np.ndarray:
    """The plan's fully covered pixels in frame ``index`` (as ``benchmarks/leaks.py`` scores them)."""
    return covered_mask(plan.regions_at(index), hw, RenderConfig())


def cmd_propose(args: argparse.Namespace) -> None:
    """Start a clip's label file: the frames to label, each with proposed boxes (CenterFace at full
    resolution down to a low score, and the detected boxes of the plan's confident tracks) for a person to check, correct,
    delete or add to. Proposals carry ``"kind": "proposed"`` until someone has looked at them."""
    from deid_edit.detect.centerface import CenterFace
    from deid_edit.geometry import nms

    clip = resolve(args.clip)
    plan = load_plan(args.plan)
    limit = None if args.seconds is None else int(args.seconds * float(plan.video.avg_rate))
    frames = frames_to_label(plan, limit)
    detector = CenterFace(device="cpu")
    out: dict[str, list[dict[str, Any]]] = {}
    for index, image in read_frames(clip, frames):
        det = detector.detect([image], [index], 1.0, args.threshold)[0]
        boxes = [det.boxes]
        for t in plan.tracks:
            if t.start <= index < t.end and not plan.is_weak(t.track_id):
                j = index - t.start
                if t.observed[j]:
                    boxes.append(t.boxes[j : j + 1])
        allb = np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32)
        scores = np.concatenate([det.scores, np.full(len(allb) - len(det.boxes), 0.99, np.float32)])
        keep = nms(allb, scores, 0.3) if len(allb) else []
        out[str(index)] = [{"box": [round(float(v), 1) for v in allb[k]], "kind": "proposed"} for k in keep]
    data = {"clip": clip.name, "sha256": sha256_of(clip), "seconds": args.seconds, "frames": out}
    path = label_path(clip)
    if path.exists() and not args.force:
        raise SystemExit(f"{path} exists; --force to replace it")
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{path}: {len(frames)} frames, {sum(len(v) for v in out.values())} proposed boxes")


def cmd_select(args: argparse.Namespace) -> None:
    plan = load_plan(args.plan)
    limit = None if args.seconds is None else int(args.seconds * float(plan.video.avg_rate))
    print(json.dumps(frames_to_label(plan, limit)))


def cmd_draw(args: argparse.Namespace) -> None:
    clip = resolve(args.clip)
    labels = load_labels(clip, args.labels)
    frames = sorted(labels["frames"]) if not args.frames else [int(f) for f in args.frames.split(",")]
    plan = load_plan(args.plan) if args.plan else None
    out = Path(args.out or f"benchmarks/out/heads/{clip.stem}")
    out.mkdir(parents=True, exist_ok=True)
    for index, image in read_frames(clip, frames):
        covered = plan_mask(plan, index, image.shape[:2]) if plan is not None else None
        img = draw_frame(image, labels["frames"].get(index, []), covered, zoom=args.zoom)
        cv2.imwrite(str(out / f"{index:05d}.png"), img)
    print(f"{len(frames)} frames drawn in {out}")


def cmd_sheet(args: argparse.Namespace) -> None:
    """Several drawn frames side by side in one PNG (4 per row, scaled to 480 px wide)."""
    clip = resolve(args.clip)
    labels = load_labels(clip, args.labels)
    frames = [int(f) for f in args.frames.split(",")] if args.frames else sorted(labels["frames"])
    plan = load_plan(args.plan) if args.plan else None
    tiles = []
    for index, image in read_frames(clip, frames):
        covered = plan_mask(plan, index, image.shape[:2]) if plan is not None else None
        img = draw_frame(image, labels["frames"].get(index, []), covered, grid=False)
        img = cv2.resize(img, (480, int(round(480 * img.shape[0] / img.shape[1]))), interpolation=cv2.INTER_AREA)
        cv2.putText(img, f"frame {index}", (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 255), 2)
        tiles.append(img)
    if not tiles:
        raise SystemExit("no frames")
    while len(tiles) % 4:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i : i + 4], axis=1) for i in range(0, len(tiles), 4)]
    cv2.imwrite(args.out, np.concatenate(rows, axis=0))
    print(args.out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("select", help="frames to label for a clip, from a plan")
    s.add_argument("clip")
    s.add_argument("--plan", required=True)
    s.add_argument("--seconds", type=float)
    s.set_defaults(fn=cmd_select)
    p = sub.add_parser("propose", help="start a label file with proposed boxes to check")
    p.add_argument("clip")
    p.add_argument("--plan", required=True)
    p.add_argument("--seconds", type=float)
    p.add_argument("--threshold", type=float, default=0.2)
    p.add_argument("--force", action="store_true")
    p.set_defaults(fn=cmd_propose)
    d = sub.add_parser("draw", help="draw the labels on their frames, one PNG each")
    d.add_argument("clip")
    d.add_argument("--frames")
    d.add_argument("--out")
    d.add_argument("--plan", help="shade this plan's covered mask; leaked heads red")
    d.add_argument("--labels", help="a label file other than benchmarks/heads/<clip>.json")
    d.add_argument("--zoom", type=float, default=1.0, help="enlarge the pictures (grid numbers stay in source pixels)")
    d.set_defaults(fn=cmd_draw)
    t = sub.add_parser("sheet", help="several drawn frames in one PNG")
    t.add_argument("clip")
    t.add_argument("--out", required=True)
    t.add_argument("--frames")
    t.add_argument("--plan")
    t.add_argument("--labels")
    t.set_defaults(fn=cmd_sheet)
    args = ap.parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main()
