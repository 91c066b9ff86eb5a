"""The privacy invariant: every ground-truth face pixel is covered in every frame, also when the
detector drops frames (injected dropouts), at the first frames of a shot, and in the output video."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from conftest import footage

from deid_edit import analyze, render
from deid_edit.config import AnalyzeConfig, DetectConfig, IdentityConfig, RenderConfig
from deid_edit.detect import create_detector
from deid_edit.render.shapes import covered_mask
from deid_edit.types import FrameDetections


class DroppingDetector:
    """Wraps the real detector and loses every face on chosen frames (blur, occlusion, a blink)."""

    def __init__(self, drop: set[int]) -> None:
        self.inner = create_detector(DetectConfig())
        self.name, self.provider = self.inner.name, self.inner.provider
        self.drop = drop

    def detect(self, images, frame_indices, scale, threshold):
        out = self.inner.detect(images, frame_indices, scale, threshold)
        return [FrameDetections.empty(d.frame_index) if d.frame_index in self.drop else d for d in out]


def coverage(plan, frame_index: int, hw: tuple[int, int], cfg: RenderConfig) -> np.ndarray:
    return covered_mask(plan.regions_at(frame_index), hw, cfg)


def face_pixels(box: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Ground-truth face pixels: the ellipse inscribed in the truth box (ear to ear, brim to chin);
    the box corners are hair, background and collar, not face."""
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]] + 0.5
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    a, b = (box[2] - box[0]) / 2, (box[3] - box[1]) / 2
    return ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1.0


def uncovered_truth_pixels(plan, truth, cfg: RenderConfig) -> dict[int, int]:
    misses = {}
    hw = (truth.height, truth.width)
    for f in range(truth.frame_count):
        cov = coverage(plan, f, hw, cfg)
        for box in truth.faces[f]:
            n = int((face_pixels(box, hw) & ~cov).sum())
            if n:
                misses[f] = misses.get(f, 0) + n
    return misses


@pytest.mark.parametrize(
    "drop",
    [set(), {3, 4, 5, 11, 20, 21, 22, 30, 39}, {0, 1, 2, 19, 20, 21, 22}],
    ids=["clean", "dropouts", "dropouts-at-shot-edges"],
)
def test_every_truth_pixel_covered(sample_clip, drop):
    path, truth = sample_clip
    plan = analyze(path, AnalyzeConfig(), detector=DroppingDetector(drop))
    assert not uncovered_truth_pixels(plan, truth, RenderConfig())
    for f in drop:
        regions = plan.regions_at(f)
        assert regions and not any(r.observed for r in regions) and all(r.margin > 0 for r in regions)


def test_rendered_output_hides_truth_faces(sample_clip, tmp_path):
    """End to end through the encoder: the solid mask really sits on every ground-truth face."""
    path, truth = sample_clip
    plan = analyze(path, AnalyzeConfig(), detector=DroppingDetector({7, 8, 25}))
    out = render(path, plan, tmp_path / "o.mp4", RenderConfig(mode="solid", color=(255, 0, 255)))
    with av.open(str(out)) as c:
        for f, frame in enumerate(c.decode(video=0)):
            img = frame.to_ndarray(format="rgb24").astype(int)
            for box in truth.faces[f]:
                x1, y1, x2, y2 = np.round(box).astype(int)
                face = img[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2]  # 2 px inside: codec ringing at the edge
                magenta = (face[..., 0] > 200) & (face[..., 1] < 60) & (face[..., 2] > 200)
                assert magenta.mean() > 0.99, f"frame {f}: face not fully masked ({magenta.mean():.3f})"


class CoarseBlindDetector:
    """Scripted detections: one large face in every frame (a quiet scene), and from frame 10 on a
    small face that only the normal detection scale finds; the half-scale pass never sees it."""

    name, provider = "scripted", "CPUExecutionProvider"
    BIG = [100.0, 60.0, 260.0, 260.0]
    SMALL = [420.0, 100.0, 460.0, 150.0]

    def __init__(self, normal_scale: float) -> None:
        self.normal = normal_scale
        self.scales: dict[int, float] = {}

    def detect(self, images, frame_indices, scale, threshold):
        out = []
        for i in frame_indices:
            self.scales[i] = scale
            boxes = [self.BIG] + ([self.SMALL] if i >= 10 and scale >= self.normal - 1e-9 else [])
            out.append(FrameDetections(i, np.array(boxes, np.float32), np.full(len(boxes), 0.9, np.float32), None))
        return out


@pytest.mark.parametrize("coarse_every", [0, 3])
def test_face_that_appears_on_a_coarse_frame_is_covered_from_its_first_frame(sample_clip, coarse_every):
    """Quiet scenes are detected at half scale on most frames; a small face that enters on such a
    frame is found on the next normal-scale frame and its track is extended back over the frames
    before: no frame of it is uncovered. With the coarse pass off every frame is normal-scale."""
    path, truth = sample_clip
    cfg = AnalyzeConfig(detect=DetectConfig(coarse_every=coarse_every), identity=IdentityConfig(enabled=False))
    normal = cfg.detect.detection_scale(truth.width, truth.height)
    det = CoarseBlindDetector(normal)
    plan = analyze(path, cfg, detector=det)
    coarse = sorted(i for i, s in det.scales.items() if s < normal)
    if coarse_every:
        assert 10 in coarse and 11 in coarse, coarse  # the small face enters unseen
        assert all(i % coarse_every for i in coarse)  # every N-th frame stays at the normal scale
        assert not [i for i in coarse if i >= 12 and i < 20]  # once a small face is seen: normal scale
    else:
        assert not coarse
    hw = (truth.height, truth.width)
    for f in range(10, truth.frame_count):
        cov = coverage(plan, f, hw, RenderConfig())
        assert cov[face_pixels(np.array(det.SMALL), hw)].all(), f"frame {f}: the small face is not covered"
        assert cov[face_pixels(np.array(det.BIG), hw)].all(), f"frame {f}: the large face is not covered"


@pytest.mark.media
@pytest.mark.parametrize(
    "clip, ref_min, max_raw, max_reviewed, max_false_pct",
    [
        # measured: raw 3 = the back of a passer-by's head going behind a sign (a reference false
        # positive, reviewed out) + 2 frames of a 14-px figure behind a shop window at the clip's end
        # (under half --min-face: no weak track starts that small); false mask 6.75% with the
        # default head region (3.57% with --region face: the reference's boxes are faces, so hair
        # and ears count as false here). Before weak tracks: 7 leaks, 65 before regions reached
        # the crown of faces looking down.
        ("crowd_small_faces_1080p.mp4", 1000, 3, 2, 8.0),
        # the media test: the target on 954 face-frames allows 0. measured: raw 1 (the
        # performer's fist, reviewed out), reviewed 0; false mask 16.2% with the head region and
        # track ends held to cuts and out of the picture (10.1% with --region face, 8.9% before the
        # holds). Before weak tracks: 7 with a run of 6 (a defocused face behind a guest that
        # CenterFace scores 0.05-0.2 in every frame).
        ("hamilton_stage.mp4", 900, 1, 0, 19.0),
    ],
)
def test_leaks_against_the_independent_reference(clip, ref_min, max_raw, max_reviewed, max_false_pct, footage_plan):
    """benchmarks/leaks.py on real footage: faces found in the original by YuNet and full-resolution
    CenterFace, leaked when under 90% of the box is covered by the rendered mask. Against the
    reviewed reference (the reference's boxes a person judged not to be faces removed): the issue's
    target, at most 1 leak per 1,000 face-frames and no leaked run over 2 frames, and no leak at
    all of a face of at least --min-face. False mask is bounded so none of it is bought by masking
    everything."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import leaks

    path = footage(clip)
    if not leaks.YUNET_DIR.is_dir():
        pytest.skip(f"needs the reference detector in {leaks.YUNET_DIR} (present in CI)")
    r = leaks.measure_leaks(path, footage_plan(clip))
    rev = r["reviewed"]
    assert r["ref_face_frames"] > ref_min and r["not_faces"] <= 1, "a reviewed non-face stands in for at most one leak here"
    assert rev["leaked"] <= max_reviewed and rev["longest_run"] <= 2 and rev["big_leaked"] == 0, rev
    assert r["leaked"] <= max_raw, r
    assert r["false_mask_pct"] <= max_false_pct, r


# -- heads that leave the picture, and the last frames before a cut -----------------------------
CAMERA_CROP = (100, 40, 340, 280)  # scikit-image's camera.png: a man in three-quarter profile at a camera
CAMERA_FACE = (178, 105, 258, 200)  # his visible face in the photo (ear to nose tip, hairline to chin), set by eye


def _camera_head() -> np.ndarray:
    from deid_edit.sample import _Photo, load_photo, photo_path

    photo = load_photo(photo_path(_Photo("skimage", "data/camera.png", CAMERA_CROP, CAMERA_FACE)))
    x1, y1, x2, y2 = CAMERA_CROP
    return photo[y1:y2, x1:x2]


def profile_clip(path: Path) -> tuple[list[list[np.ndarray]], int, int]:
    """A 640x360 clip, 25 fps: shot 1 (frames 0-29) a man in profile walks out of the picture to
    the right (his face fully gone at frame 19); shot 2 (30-49) the same man standing still; shot 3
    (50-59) an empty background. Returns the per-frame face boxes and the two cuts."""
    from deid_edit.sample import _background

    head = _camera_head()
    hh, hw = head.shape[:2]
    fx1, fy1, fx2, fy2 = (
        CAMERA_FACE[0] - CAMERA_CROP[0],
        CAMERA_FACE[1] - CAMERA_CROP[1],
        CAMERA_FACE[2] - CAMERA_CROP[0],
        CAMERA_FACE[3] - CAMERA_CROP[1],
    )
    rng = np.random.default_rng(3)
    grounds = [
        _background(640, 360, cols, rng)
        for cols in (
            ((90, 60, 40), (200, 150, 90), (60, 90, 140)),
            ((30, 60, 90), (120, 170, 200), (200, 120, 60)),
            ((60, 80, 60), (150, 190, 140), (90, 60, 120)),
        )
    ]
    faces: list[list[np.ndarray]] = []
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25, options={"crf": "12", "threads": "2"})
        s.width, s.height, s.pix_fmt = 640, 360, "yuv420p"
        for f in range(60):
            shot = 0 if f < 30 else 1 if f < 50 else 2
            img = grounds[shot].copy()
            boxes = []
            if shot < 2:
                x0 = 300 + 14 * f if shot == 0 else 200
                y0 = 60
                xa, xb = max(0, x0), min(640, x0 + hw)
                if xb > xa:
                    img[y0 : y0 + hh, xa:xb] = head[:, xa - x0 : xb - x0]
                box = np.array([x0 + fx1, y0 + fy1, min(640, x0 + fx2), y0 + fy2], np.float32)
                if box[2] > box[0]:
                    boxes.append(box)
            faces.append(boxes)
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return faces, 30, 50


@pytest.mark.slow  # ~4.5 s: its own clip, analyzed and rendered
def test_a_profile_leaving_the_picture_and_a_face_lost_before_a_cut_stay_covered(tmp_path):
    """hamilton frames 57-62 and 81, generated: the detector loses a profile once the frame edge cuts
    it, and loses a face on the last three frames before a cut (dropped on purpose). Every pixel of
    the face that is still in the picture stays covered, in every frame, by the face region (the
    default head region)."""
    path = tmp_path / "profile.mp4"
    faces, cut1, cut2 = profile_clip(path)
    edge = {f for f, boxes in enumerate(faces) if f < cut1 and boxes and boxes[0][2] >= 640 - 4}
    drop = edge | {cut2 - 3, cut2 - 2, cut2 - 1}
    plan = analyze(path, AnalyzeConfig(identity=IdentityConfig(enabled=False)), detector=DroppingDetector(drop))
    assert [s.start for s in plan.shots[1:]] == [cut1, cut2]
    assert any(r.observed for r in plan.regions_at(3)), "the profile is found while it is in the picture"
    hw = (360, 640)
    for f, boxes in enumerate(faces):
        cov = coverage(plan, f, hw, RenderConfig())
        for box in boxes:
            missed = int((face_pixels(box, hw) & ~cov).sum())
            assert missed == 0, f"frame {f}: {missed} face pixels uncovered"
    assert not any(plan.regions_at(f) for f in range(cut2 + 1, 60)), "nothing is held into the empty shot (beyond the cut's one frame)"


@pytest.mark.media
def test_hamilton_profile_at_the_edge_and_the_head_before_the_cut_are_covered(footage_plan):
    """The hand-checked head set (benchmarks/heads/hamilton_stage.json, labelled by looking): a
    bearded man's profile cut by the right edge (frames 57-62) and a performer's profile on the last
    frame before the cut at 82 (frame 81) were left visible; every labelled head must be covered
    (at least 90% of its visible face area) by the default render's mask."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import leaks

    path = footage("hamilton_stage.mp4")
    labels = leaks.headset.load_labels(path)["frames"]
    assert all(labels[f] for f in (57, 58, 59, 60, 61, 62, 81)), "the set labels the heads of those frames"
    r = leaks.measure_heads(path, footage_plan("hamilton_stage.mp4"))
    assert r["heads"] >= 700, r["heads"]
    assert r["leaks"] == [], r["leaks"]
