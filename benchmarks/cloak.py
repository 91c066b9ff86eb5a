"""The cloak (``--mode cloak``) measured on people it never saw in training: identity removal,
naturalness, temporal stability and speed. Prints tables; saves ``benchmarks/out/cloak_grid.png``.

* People: LFW people with >= 2 photos that ``generator.extract.lfw_held_out`` holds out, plus the
  ``../shared/faces/people`` folders holding >= 2 photos of one person (held out of training by
  ``extract-faces --holdout-people``). Photo 1 of each is cloaked, photo 2 is "another photo".
  The face is CenterFace's (threshold 0.5) nearest the image centre; it is cloaked by the renderer
  itself (``render.cloak.Cloak`` on the whole image, verification off: the generator is measured,
  not the blur fallback).
* Identity removal: the fraction of faces our exact recognizer (``FaceEmbedder(recognizer="exact")``)
  still matches (L2 < 0.6) (a) to the same original photo and (b) to the person's other photo,
  before (the original) and after (the cloaked face), at the original landmarks.
* Naturalness: the cloaked 150 chip placed in a padded canvas is still found by CenterFace at
  0.5; its 5 landmarks vs the original chip's (found the same way), in units of the original's
  inter-ocular distance (mean, and the fraction with every point within 5%); SSIM of the chips.
* Temporal stability on ``../shared/footage/talkinghead_1..5.mp4`` (first ``--frames`` frames):
  the largest face per frame, its landmarks smoothed by a centred moving average (a stand-in for
  the plan's smoother), one track; mean absolute frame-to-frame change inside the face box,
  cloaked / original (1.0 = no added flicker).
* Speed on this machine: ms per face through ONNX Runtime at batch 1 and 16, generator alone and
  generator + the renderer's (fast) recognizer.

* ``--footage [CLIP ...]``: the cloak on real footage, rendered as a user runs it (``footage``).

Usage::

    python benchmarks/cloak.py [--model models/cloak.onnx] [--count 200] [--frames 60] [--threads 0]
    python benchmarks/cloak.py --footage [CLIP ...] [--every 5]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import av
import cv2
import numpy as np

from deid_edit.config import DetectConfig, EncodeConfig, RenderConfig
from deid_edit.detect import create_detector
from deid_edit.embed import CHIP_SIZE, SAME_PERSON_L2, FaceEmbedder, chip_transform, distance, warp_chip
from deid_edit.generator.extract import lfw_held_out
from deid_edit.nets import CROP_SIZE, DESCRIPTOR_SIZE
from deid_edit.render.cloak import Cloak
from deid_edit.types import FaceRegion

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
LFW = SHARED / "faces" / "lfw" / "lfw_deepfunneled"
PEOPLE = SHARED / "faces" / "people"
FOOTAGE = SHARED / "footage"
OUT = ROOT / "benchmarks" / "out"
THRESHOLD = 0.5  # CenterFace score for "still a face"
LANDMARK_TOLERANCE = 0.05  # of the inter-ocular distance
CANVAS_PAD = 75  # px of grey around a 150 chip, so the detector sees a face with context room
SMOOTH_FRAMES = 5  # moving-average window of the landmarks in the temporal test
GRID_FACES = 12
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def held_out_people(count: int) -> list[tuple[str, Path, Path]]:
    """(name, photo 1, photo 2) of held-out people: the people folders first, then LFW."""
    out = []
    for folder in sorted(
        p for d in (PEOPLE / "knn_examples" / "train", PEOPLE / "celebs") if d.is_dir() for p in d.iterdir() if p.is_dir()
    ):
        photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(photos) >= 2:
            out.append((folder.name, photos[0], photos[1]))
    if LFW.is_dir():
        for folder in sorted(LFW.iterdir()):
            photos = sorted(folder.glob("*.jpg"))
            if len(photos) >= 2 and lfw_held_out(folder.name, len(photos)):
                out.append((folder.name, photos[0], photos[1]))
    return out[:count]


def load_rgb(path: Path) -> np.ndarray | None:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def centre_face(detector, img: np.ndarray, threshold: float = THRESHOLD) -> tuple[np.ndarray, np.ndarray] | None:
    """(box, landmarks) of the detection nearest the image centre, or None."""
    (det,) = detector.detect([img], [0], 1.0, threshold)
    if not len(det) or det.landmarks is None:
        return None
    h, w = img.shape[:2]
    centres = (det.boxes[:, :2] + det.boxes[:, 2:]) / 2
    i = int(np.argmin(np.linalg.norm(centres - [w / 2, h / 2], axis=1)))
    return det.boxes[i], det.landmarks[i]


def chip_landmarks(detector, chip: np.ndarray) -> np.ndarray | None:
    """Landmarks CenterFace finds in ``chip`` placed in a grey canvas (chip pixels), or None."""
    canvas = cv2.copyMakeBorder(chip, CANVAS_PAD, CANVAS_PAD, CANVAS_PAD, CANVAS_PAD, cv2.BORDER_CONSTANT, value=(128, 128, 128))
    found = centre_face(detector, canvas)
    return None if found is None else found[1] - CANVAS_PAD


def identity_and_naturalness(
    cloak: Cloak, detector, exact: FaceEmbedder, people: list[tuple[str, Path, Path]], cfg: RenderConfig, grid_file: Path | None = None
) -> dict[str, float]:
    """Print the identity-removal and naturalness tables; return their numbers (tests assert on
    them): ``faces``, ``same_before``/``same_after``/``other_before``/``other_after`` (fractions
    matched), ``detected``, ``landmark_shift`` (mean of each face's worst point / IOD),
    ``landmarks_within`` (fraction of faces with all 5 within 5%), ``ssim``, ``verified``."""
    from skimage.metrics import structural_similarity

    guarded = Cloak(model=cloak.model, threads=cloak.threads, verify=True)  # what a render would write

    rows = []  # (d_same_before, d_same_after, d_other_before, d_other_after, detected, lm_err, ssim)
    grid: list[np.ndarray] = []
    for i, (_name, p1, p2) in enumerate(people):
        a, b = load_rgb(p1), load_rgb(p2)
        if a is None or b is None:
            continue
        fa, fb = centre_face(detector, a), centre_face(detector, b)
        if fa is None or fb is None:
            continue
        region = FaceRegion(identity_id=0, track_id=i, box=fa[0], landmarks=fa[1], observed=True)
        cloaked = cloak.apply(a.copy(), [region], cfg)
        guarded.apply(a.copy(), [region], cfg)
        transform = chip_transform(fa[1])
        chip_o, chip_c = warp_chip(a, transform), warp_chip(cloaked, transform)
        e_o, e_c = exact.embed(np.stack([chip_o, chip_c]))
        (e_b,) = exact.embed_faces(b, fb[1][None])
        lm_o, lm_c = chip_landmarks(detector, chip_o), chip_landmarks(detector, chip_c)
        lm_err = np.nan
        if lm_o is not None and lm_c is not None:
            iod = float(np.linalg.norm(lm_o[1] - lm_o[0]))
            lm_err = float(np.linalg.norm(lm_c - lm_o, axis=1).max() / iod)
        ssim = structural_similarity(chip_o, chip_c, channel_axis=2, data_range=255)
        rows.append((0.0, float(distance(e_c, e_o)), float(distance(e_o, e_b)), float(distance(e_c, e_b)), lm_c is not None, lm_err, ssim))
        if len(grid) < GRID_FACES:
            grid.append(np.hstack([chip_o, chip_c]))
    if not rows:
        print("no usable held-out people found")
        return {"faces": 0}
    r = np.array(rows, np.float64)
    match = r[:, :4] < SAME_PERSON_L2
    print(f"\nIdentity removal ({len(r)} held-out people; exact recognizer, match = L2 < {SAME_PERSON_L2})")
    print(f"{'matched to':<28}{'before':>10}{'after':>10}{'mean L2 after':>16}")
    print(f"{'(a) the same original face':<28}{match[:, 0].mean():>10.1%}{match[:, 1].mean():>10.1%}{r[:, 1].mean():>16.3f}")
    print(f"{'(b) another photo of them':<28}{match[:, 2].mean():>10.1%}{match[:, 3].mean():>10.1%}{r[:, 3].mean():>16.3f}")
    g, n = guarded.stats, max(guarded.stats.faces, 1)
    print(f"renderer with verification (fast recognizer): {g.cloaked / n:.1%} cloaked, {g.unverified / n:.1%} blurred")
    err = r[:, 5][~np.isnan(r[:, 5])]
    print("\nNaturalness")
    print(f"{'still detected (CenterFace 0.5)':<40}{r[:, 4].mean():>10.1%}")
    if len(err):
        print(f"{'landmark shift / inter-ocular, mean':<40}{err.mean():>10.3f}")
        print(f"{'faces with all 5 points within 5%':<40}{(err <= LANDMARK_TOLERANCE).mean():>10.1%}")
    print(f"{'SSIM of the face chip (mean)':<40}{r[:, 6].mean():>10.3f}")
    if grid_file is not None:
        grid_file.parent.mkdir(parents=True, exist_ok=True)
        cols = 3
        while len(grid) % cols:
            grid.append(np.zeros_like(grid[0]))
        sheet = np.vstack([np.hstack(grid[k : k + cols]) for k in range(0, len(grid), cols)])
        cv2.imwrite(str(grid_file), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        print(f"\nsaved {grid_file} (each pair: original chip | cloaked chip)")
    return {
        "faces": float(len(r)),
        "same_before": float(match[:, 0].mean()),
        "same_after": float(match[:, 1].mean()),
        "other_before": float(match[:, 2].mean()),
        "other_after": float(match[:, 3].mean()),
        "detected": float(r[:, 4].mean()),
        "landmark_shift": float(err.mean()) if len(err) else float("nan"),
        "landmarks_within": float((err <= LANDMARK_TOLERANCE).mean()) if len(err) else 0.0,
        "ssim": float(r[:, 6].mean()),
        "verified": g.cloaked / n,
    }


def moving_average(x: np.ndarray, window: int = SMOOTH_FRAMES) -> np.ndarray:
    """Centred moving average along axis 0, edges padded with the end values (stand-in for smooth.py)."""
    pad = window // 2
    flat = x.reshape(len(x), -1)
    padded = np.concatenate([flat[:1].repeat(pad, 0), flat, flat[-1:].repeat(pad, 0)])
    kernel = np.ones(window) / window
    return np.stack([np.convolve(padded[:, c], kernel, mode="valid") for c in range(flat.shape[1])], axis=1).reshape(x.shape)


def temporal(cloak_factory, detector, frames: int, cfg: RenderConfig) -> None:
    print(f"\nTemporal stability (first {frames} frames; mean |frame t - frame t-1| inside the face box)")
    print(f"{'clip':<22}{'faces':>6}{'original':>10}{'cloaked':>10}{'ratio':>8}")
    ratios = []
    for k in range(1, 6):
        path = FOOTAGE / f"talkinghead_{k}.mp4"
        if not path.is_file():
            print(f"{path.name:<22} missing")
            continue
        imgs = []
        with av.open(str(path)) as c:
            for f in c.decode(video=0):
                imgs.append(f.to_ndarray(format="rgb24"))
                if len(imgs) >= frames:
                    break
        found = []
        for img in imgs:
            (det,) = detector.detect([img], [0], 1.0, THRESHOLD)
            if len(det) and det.landmarks is not None:
                j = int(np.argmax((det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1])))
                found.append((det.boxes[j], det.landmarks[j]))
            else:
                found.append(None)
        if any(f is None for f in found):
            imgs, found = [im for im, f in zip(imgs, found) if f is not None], [f for f in found if f is not None]
        if len(found) < 3:
            print(f"{path.name:<22} too few faces")
            continue
        boxes = np.array([f[0] for f in found], np.float64)
        lms = np.array([f[1] for f in found], np.float64)
        boxes, lms = moving_average(boxes), moving_average(lms)
        cloak = cloak_factory()
        outs = [cloak.apply(im.copy(), [FaceRegion(0, 1, b.astype(np.float32), lm, True)], cfg) for im, b, lm in zip(imgs, boxes, lms)]
        d_o, d_c = [], []
        for t in range(1, len(imgs)):
            x1, y1, x2, y2 = boxes[t].astype(int)
            x1, y1 = max(x1, 0), max(y1, 0)
            d_o.append(np.abs(imgs[t][y1:y2, x1:x2].astype(np.float32) - imgs[t - 1][y1:y2, x1:x2]).mean())
            d_c.append(np.abs(outs[t][y1:y2, x1:x2].astype(np.float32) - outs[t - 1][y1:y2, x1:x2]).mean())
        ratio = float(np.mean(d_c) / max(np.mean(d_o), 1e-6))
        ratios.append(ratio)
        print(f"{path.name:<22}{len(imgs):>6}{np.mean(d_o):>10.2f}{np.mean(d_c):>10.2f}{ratio:>8.2f}")
    if ratios:
        print(f"{'mean':<22}{'':>26}{np.mean(ratios):>8.2f}")


def speed(cloak: Cloak, cfg: RenderConfig, repeats: int = 5) -> None:
    if cloak._model is None:
        cloak._load(cfg)
    assert cloak._embedder is not None
    print(f"\nSpeed (ms per face, this machine, provider {cloak._model.provider})")
    print(f"{'batch':<8}{'generator':>12}{'gen + embed':>14}")
    rng = np.random.default_rng(0)
    for batch in (1, 16):
        x = rng.uniform(0, 255, (batch, CROP_SIZE, CROP_SIZE, 3)).astype(np.float32)
        chips = rng.integers(0, 256, (batch, CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
        d = rng.normal(0, 0.1, (batch, DESCRIPTOR_SIZE)).astype(np.float32)
        cloak.generate(x, d)  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            cloak.generate(x, d)
        gen = (time.perf_counter() - t0) / repeats / batch * 1000
        cloak._embedder.embed(chips)
        t0 = time.perf_counter()
        for _ in range(repeats):
            cloak._embedder.embed(chips)
        emb = (time.perf_counter() - t0) / repeats / batch * 1000
        print(f"{batch:<8}{gen:>12.1f}{gen + emb:>14.1f}")


FOOTAGE_CLIPS = (
    "sofa_interviewee_1080p.mp4",
    "studio_interview_2people.mp4",
    "talkinghead_1.mp4",
    "talkinghead_2.mp4",
    "talkinghead_3.mp4",
    "talkinghead_4.mp4",
    "talkinghead_5.mp4",
    "portrait_source_s18.mp4",
    "portrait_driving_d0.mp4",
    "phone_selfie.mp4",
    "phone_selfie_2faces.mp4",
    "crowd_small_faces_1080p.mp4",
)


def share_of(n: float, of: int) -> str:
    return f"{n / of:6.1%}" if of else f"{'-':>6s}"


FOOTAGE_MIN_FACE = 64  # px, short side of the region box: the "faces >= 64 px"
SHEET_FACES = 24


def footage(clips: list[str], model: Path | None, every: int, threads: int, sheet: Path) -> None:
    """``--footage``: each clip analyzed and rendered with ``--mode cloak`` as a user runs it
    (verification on), then read back. Per clip, over the face samples >= 64 px: the share
    cloaked (not blurred); of the cloaked ones (every ``every``-th frame): the share the exact
    recognizer still matches (L2 < 0.6) to the original face in any ``reid_views`` view, the
    share CenterFace still finds at 0.5, the landmark shift (worst point / eye distance) and the
    flicker (mean absolute change inside the box from frame to frame, cloaked / original). A
    contact sheet of close-ups (original | cloaked) goes to ``sheet``."""
    import importlib

    from deid_edit import analyze
    from deid_edit.io.decode import upright_k
    from deid_edit.render.cloak import MIN_CLOAK_FACE_PX, VIEWS, landmarks_from_box, reid_views
    from deid_edit.render.shapes import to_coded

    render_mod = importlib.import_module("deid_edit.pipeline.render")

    def face_landmarks(r: FaceRegion) -> np.ndarray:
        return landmarks_from_box(r.box) if r.landmarks is None else np.asarray(r.landmarks, np.float64)

    cfg = RenderConfig(mode="cloak")
    detector = create_detector(DetectConfig(threads=threads))
    exact = FaceEmbedder(threads=threads, recognizer="exact")
    sheet_rows: list[np.ndarray] = []
    total = np.zeros(7)
    print(f"{'clip':34s} {'samples':>7s} {'cloaked':>8s} {'re-id':>6s} {'found':>6s} {'lm shift':>8s} {'flicker':>8s}  tracks")
    for name in clips:
        path = FOOTAGE / name
        if not path.is_file():
            print(f"{name:34s} (not in ../shared/footage)")
            continue
        plan = analyze(path)
        cloak = Cloak(model=model, threads=threads, verify=True)
        out_path = OUT / f"cloak_{path.stem}.mp4"
        OUT.mkdir(parents=True, exist_ok=True)
        real = render_mod.get_anonymizer
        render_mod.get_anonymizer = lambda mode, c=cloak: c
        try:
            render_mod.render(path, plan, out_path, cfg, EncodeConfig(force=True))
        finally:
            render_mod.get_anonymizer = real
        k = upright_k(plan.video.rotation)
        trial = Cloak(model=model, threads=threads, verify=False)  # the generator's attempt, for the sheet
        with_faces = [
            i
            for i in range(plan.frame_count)
            if any(min(r.box[2] - r.box[0], r.box[3] - r.box[1]) >= FOOTAGE_MIN_FACE and not r.weak for r in plan.regions_at(i))
        ]
        sheet_at = {with_faces[int(q * (len(with_faces) - 1))] for q in (0.2, 0.8)} if with_faces else set()
        left = dict(cloak.cloaked_frames)  # a track is cloaked in the first frames it reached the generator in
        big = cloaked = 0
        reid = found = checked = 0
        shifts: list[float] = []
        flick_c: list[float] = []
        flick_o: list[float] = []
        last: tuple[np.ndarray, np.ndarray] | None = None  # the frame before, when it had cloaked faces
        with av.open(str(path)) as a, av.open(str(out_path)) as b:
            for i, (fa, fb) in enumerate(zip(a.decode(video=0), b.decode(video=0))):
                regions = plan.regions_at(i)
                coded = to_coded(regions, k, fa.width, fa.height)  # coded pixels, as the renderer drew them
                mine = []
                for r in coded:
                    if not r.weak and r.box[2] - r.box[0] >= MIN_CLOAK_FACE_PX and left.get(r.track_id, 0) > 0:
                        left[r.track_id] -= 1
                        if min(r.box[2] - r.box[0], r.box[3] - r.box[1]) >= FOOTAGE_MIN_FACE:
                            mine.append(r)
                big += sum(min(r.box[2] - r.box[0], r.box[3] - r.box[1]) >= FOOTAGE_MIN_FACE for r in coded if not r.weak)
                cloaked += len(mine)
                if i in sheet_at and len(sheet_rows) < SHEET_FACES:  # what the generator made of the largest face here, cloaked or not
                    img_o, img_c = fa.to_ndarray(format="rgb24"), fb.to_ndarray(format="rgb24")
                    r = max(coded, key=lambda q: q.box[2] - q.box[0])
                    t = chip_transform(face_landmarks(r))
                    shown = any(r is q for q in mine)
                    attempt = img_c if shown else trial.apply(img_o.copy(), [r], cfg)
                    pair = np.hstack([warp_chip(img_o, t), warp_chip(attempt, t)])
                    pair[:4] = (40, 200, 40) if shown else (220, 40, 40)  # green: cloaked in the render; red: blurred there
                    sheet_rows.append(pair)
                if not mine:
                    last = None
                    continue
                img_o, img_c = fa.to_ndarray(format="rgb24"), fb.to_ndarray(format="rgb24")
                for r in mine:  # flicker: frame to frame inside the box, both videos
                    x0, y0, x1, y1 = (max(0, int(v)) for v in r.box)
                    if last is not None:
                        flick_o.append(float(np.abs(img_o[y0:y1, x0:x1].astype(int) - last[0][y0:y1, x0:x1]).mean()))
                        flick_c.append(float(np.abs(img_c[y0:y1, x0:x1].astype(int) - last[1][y0:y1, x0:x1]).mean()))
                last = (img_o, img_c)
                if i % every:
                    continue
                for r in mine:
                    t = chip_transform(face_landmarks(r))
                    e_o = exact.embed(warp_chip(img_o, t)[None])[0]
                    d = distance(exact.embed(reid_views(img_c, t)), e_o)
                    checked += 1
                    reid += bool((d < SAME_PERSON_L2).any())
                    x0, y0, x1, y1 = (int(v) for v in r.box)
                    pad = int(0.5 * (x1 - x0))
                    crop = (slice(max(0, y0 - pad), y1 + pad), slice(max(0, x0 - pad), x1 + pad))
                    got_o = centre_face(detector, np.ascontiguousarray(img_o[crop]), 0.3)
                    got_c = centre_face(detector, np.ascontiguousarray(img_c[crop]), THRESHOLD)
                    found += got_c is not None
                    if got_o is not None and got_c is not None:
                        iod = float(np.linalg.norm(got_o[1][1] - got_o[1][0]))
                        shifts.append(float(np.linalg.norm(got_c[1] - got_o[1], axis=1).max() / max(iod, 1.0)))
        s = cloak.stats
        share = cloaked / big if big else float("nan")
        row = [big, cloaked, checked, reid, found, float(np.mean(shifts)) if shifts else np.nan]
        flicker = float(np.mean(flick_c) / max(np.mean(flick_o), 1e-6)) if flick_o else float("nan")
        print(
            f"{name:34s} {big:7d} {share:8.1%} {share_of(reid, int(checked))} {share_of(found, int(checked))} "
            f"{row[5]:8.3f} {flicker:8.2f}  {s.tracks_cloaked} cloaked, {s.tracks_blurred} blurred, {s.switched} switched"
        )
        total += np.array([big, cloaked, checked, reid, found, 0, 0])
    big, cloaked, checked, reid, found = total[:5]
    print(
        f"{'all':34s} {int(big):7d} {cloaked / max(big, 1):8.1%} {share_of(reid, int(checked))} {share_of(found, int(checked))}"
        f"   (re-id: exact recognizer, L2 < {SAME_PERSON_L2}, any of: {', '.join(VIEWS)})"
    )
    if sheet_rows:
        cv2.imwrite(str(sheet), cv2.cvtColor(np.vstack(sheet_rows), cv2.COLOR_RGB2BGR))
        print(f"contact sheet: {sheet} ({len(sheet_rows)} close-ups, original | generator; green bar: cloaked in the render, red: blurred)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="cloak ONNX (default: $DEID_EDIT_CLOAK_MODEL, else the manifest's cloak)")
    ap.add_argument("--count", type=int, default=200, help="held-out people (faces) to measure")
    ap.add_argument("--frames", type=int, default=60, help="frames per talkinghead clip for the temporal test")
    ap.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0 = default)")
    ap.add_argument("--no-temporal", action="store_true")
    ap.add_argument("--footage", nargs="*", metavar="CLIP", help="measure on footage (../shared/footage; default: the dev clips)")
    ap.add_argument("--every", type=int, default=5, help="--footage: check every N-th frame's cloaked faces")
    args = ap.parse_args()
    if args.footage is not None:
        footage(args.footage or list(FOOTAGE_CLIPS), args.model, args.every, args.threads, OUT / "cloak_footage.png")
        return

    cfg = RenderConfig(mode="cloak")
    detector = create_detector(DetectConfig(threads=args.threads))

    def new_cloak() -> Cloak:
        return Cloak(model=args.model, threads=args.threads, verify=False)

    cloak = new_cloak()
    print(f"model: {cloak.model_file(cfg)}")
    exact = FaceEmbedder(threads=args.threads, recognizer="exact")
    people = held_out_people(args.count)
    identity_and_naturalness(cloak, detector, exact, people, cfg, OUT / "cloak_grid.png")
    if not args.no_temporal:
        temporal(new_cloak, detector, args.frames, cfg)
    speed(cloak, cfg)


if __name__ == "__main__":
    main()
