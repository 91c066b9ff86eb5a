"""CenterFace through ONNX Runtime: real model on real face photos; provider choice; scaling."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from deid_edit.backend.ort import available_devices, choose_providers
from deid_edit.config import DetectConfig
from deid_edit.detect import TILE_SIDE, create_detector, detect_tiled, tile_grid
from deid_edit.errors import ConfigError, ModelError
from deid_edit.geometry import nms
from deid_edit.sample import ASTRONAUT, GRACE_HOPPER, load_photo, photo_path


@pytest.fixture(scope="module")
def detector():
    return create_detector(DetectConfig())


def iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("photo", [GRACE_HOPPER, ASTRONAUT], ids=["grace_hopper", "astronaut"])
def test_finds_the_face_with_landmarks(detector, photo):
    img = load_photo(photo_path(photo))
    (det,) = detector.detect([img], [0], 1.0, 0.35)
    assert len(det) == 1
    assert iou(det.boxes[0], np.asarray(photo.face, np.float32)) > 0.5
    lm = det.landmarks[0]
    x1, y1, x2, y2 = det.boxes[0]
    assert np.all((lm[:, 0] > x1) & (lm[:, 0] < x2) & (lm[:, 1] > y1) & (lm[:, 1] < y2))
    assert lm[0, 0] < lm[1, 0], "left eye should be left of right eye"


def test_scaled_input_returns_source_coordinates(detector):
    img = load_photo(photo_path(GRACE_HOPPER))
    (full,) = detector.detect([img], [0], 1.0, 0.35)
    half = cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)
    (scaled,) = detector.detect([half], [7], 0.5, 0.35)
    assert scaled.frame_index == 7
    assert len(full) == len(scaled) == 1, "scaling lost or added a face"
    assert iou(full.boxes[0], scaled.boxes[0]) > 0.8


def test_batch_equals_single(detector):
    a = load_photo(photo_path(GRACE_HOPPER))[:512, :512]
    b = load_photo(photo_path(ASTRONAUT))
    single = [detector.detect([x], [i], 1.0, 0.35)[0] for i, x in enumerate((a, b))]
    batched = detector.detect([a, b], [0, 1], 1.0, 0.35)
    assert len(batched) == len(single) == 2
    assert [len(s) for s in single] == [1, 1], "each photo shows one face"
    for i, (s, m) in enumerate(zip(single, batched)):
        assert m.frame_index == s.frame_index == i
        # counts first: np.allclose broadcasts (1, 4) against (0, 4) and would pass on a lost face
        assert m.boxes.shape == s.boxes.shape, f"frame {i}: batching changed the number of faces"
        assert np.allclose(s.boxes, m.boxes, atol=0.5), f"frame {i}"
        assert np.allclose(s.landmarks, m.landmarks, atol=0.5), f"frame {i}"


def test_frames_run_side_by_side_give_the_same_faces(detector):
    """A one-thread session runs a batch's frames side by side (the streaming run's detector):
    the same boxes, scores, landmarks and frame order as the whole batch in one call."""
    import os

    a = load_photo(photo_path(GRACE_HOPPER))[:512, :512]
    b = load_photo(photo_path(ASTRONAUT))[:512, :512]
    frames = [a, b, a[:, ::-1].copy()]
    lean = create_detector(DetectConfig(threads=1))
    assert lean.concurrent == (os.cpu_count() or 1)
    got = lean.detect(frames, [4, 5, 6], 1.0, 0.35)
    want = detector.detect(frames, [4, 5, 6], 1.0, 0.35)
    assert [d.frame_index for d in got] == [4, 5, 6]
    assert [len(d) for d in got] == [len(d) for d in want] == [1, 1, 1]
    for g, w in zip(got, want):
        assert np.array_equal(g.boxes, w.boxes) and np.array_equal(g.scores, w.scores)
        assert np.array_equal(g.landmarks, w.landmarks)


def test_empty_frame_has_no_faces(detector):
    (det,) = detector.detect([np.full((360, 640, 3), 90, np.uint8)], [3], 1.0, 0.35)
    assert len(det) == 0 and det.frame_index == 3


def test_nms_keeps_best_of_overlaps():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    keep = nms(boxes, np.array([0.5, 0.9, 0.7], np.float32), 0.3)
    assert keep.tolist() == [1, 2]


def test_device_choice():
    assert "cpu" in available_devices()
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    assert choose_providers("auto")[-1] == "CPUExecutionProvider"
    missing = next(d for d in ("directml", "coreml", "tensorrt", "cuda") if d not in available_devices())
    with pytest.raises(ModelError, match="available: auto, .*cpu"):
        choose_providers(missing)
    with pytest.raises(ConfigError, match="--device"):
        DetectConfig(device="quantum")


def test_detection_scale_keeps_small_faces():
    cfg = DetectConfig()
    assert cfg.detection_scale(640, 360) == 1.0
    s = cfg.detection_scale(1920, 1080)
    assert 70 * s >= 18, "70-px faces of a 1080p crowd must stay detectable"
    assert DetectConfig(min_face=20).detection_scale(1920, 1080) > s


def test_tile_grid_covers_the_image_and_overlaps():
    """Every pixel is in a tile, no tile is larger than ``TILE_SIDE``, and any run of ``overlap``
    pixels along either axis lies inside one tile (so does a face no larger than that)."""
    cases = [
        (1080, 1920, 96),
        (1920, 1080, 96),
        (2160, 3840, 128),
        (720, 1280, 96),
        (544, 960, 96),
        (1081, 2049, 64),
        (1080, 1920, 800),
        (2160, 3840, 2500),
    ]
    for h, w, overlap in cases:
        (th, tw), origins = tile_grid(h, w, overlap)
        side = max(TILE_SIDE, 2 * overlap + 64)  # a large --min-face needs larger tiles
        assert th <= h and tw <= w and th <= side + 31 and tw <= side + 31
        covered = np.zeros((h, w), bool)
        for y, x in origins:
            assert 0 <= y <= h - th and 0 <= x <= w - tw
            covered[y : y + th, x : x + tw] = True
        assert covered.all(), (h, w)
        for n, size, starts in ((h, th, sorted({y for y, _ in origins})), (w, tw, sorted({x for _, x in origins}))):
            for a in range(0, n - overlap + 1):
                assert any(s <= a and a + overlap <= s + size for s in starts), (n, a)


class _Recording:
    """A detector that records the input shapes it was given."""

    def __init__(self, inner):
        self.inner, self.name, self.provider, self.shapes = inner, inner.name, inner.provider, []

    def detect(self, images, frame_indices, scale, threshold):
        self.shapes.extend(img.shape[:2] for img in images)
        return self.inner.detect(images, frame_indices, scale, threshold)


def _paste_face(canvas: np.ndarray, face_side: int, x: int, y: int) -> tuple[float, float, float, float]:
    """The Grace Hopper photo scaled so her face is ``face_side`` px wide, pasted with the face's
    top-left at (x, y); returns the face box. Not ``sample._paste_photo``: its feathered edge made
    the cut-piece test below pass with the pieces kept, so it could no longer fail."""
    cx1, cy1, cx2, cy2 = GRACE_HOPPER.crop
    img = load_photo(photo_path(GRACE_HOPPER))[cy1:cy2, cx1:cx2]
    f = face_side / (GRACE_HOPPER.face[2] - GRACE_HOPPER.face[0])
    small = cv2.resize(img, (round(img.shape[1] * f), round(img.shape[0] * f)), interpolation=cv2.INTER_AREA)
    fx, fy = round((GRACE_HOPPER.face[0] - GRACE_HOPPER.crop[0]) * f), round((GRACE_HOPPER.face[1] - GRACE_HOPPER.crop[1]) * f)
    x0, y0 = x - fx, y - fy
    sh, sw = small.shape[:2]
    canvas[max(0, y0) : y0 + sh, max(0, x0) : x0 + sw] = small[max(0, -y0) : canvas.shape[0] - y0, max(0, -x0) : canvas.shape[1] - x0]
    return (x, y, x + face_side, y + (GRACE_HOPPER.face[3] - GRACE_HOPPER.face[1]) * f)


def test_tiled_detection_finds_faces_on_tile_edges(detector):
    """The full-resolution sweep of a 1080p frame runs in tiles no larger than ``TILE_SIDE`` (the
    detector's memory grows with its input) and still finds small faces that straddle the tiles'
    inner edges (x 896 and 1024, y 472 and 608 here), each once."""
    canvas = np.full((1080, 1920, 3), 110, np.uint8)
    spots = [(200, 150), (860, 300), (995, 700), (930, 505), (1500, 440), (1200, 580)]
    truth = [_paste_face(canvas, 64, x, y) for x, y in spots]
    rec = _Recording(detector)
    found = detect_tiled(rec, canvas, 9, 0.3, 96)
    assert rec.shapes and max(max(s) for s in rec.shapes) <= TILE_SIDE
    assert found.frame_index == 9
    for t in truth:
        overlaps = [iou(b, t) for b in found.boxes]
        assert sum(o > 0.3 for o in overlaps) == 1, f"face at {t}: {overlaps}"
    assert found.landmarks is not None and found.landmarks.shape == (len(found), 5, 2)


def test_tiled_detection_drops_pieces_of_a_face_cut_by_a_tile(detector):
    """A face larger than the overlap is cut by an inner edge; the pieces are dropped (the
    normal-scale pass finds such a face whole), never returned as a smaller box of the face."""
    canvas = np.full((1080, 1920, 3), 110, np.uint8)
    _paste_face(canvas, 300, 820, 300)  # x 820-1120: over both inner edges, x 896 and 1024
    whole = detector.detect([canvas], [0], 1.0, 0.3)[0]
    assert len(whole) == 1, "the whole frame shows one face"
    found = detect_tiled(detector, canvas, 0, 0.1, 96)
    for x1, y1, x2, y2 in found.boxes:
        assert abs(x1 - 896) > 0.5 and abs(x2 - 1024) > 0.5, f"a cut piece came out: {(x1, y1, x2, y2)}"


def test_cpu_sessions_plan_no_memory_pattern():
    """On the CPU a session keeps no planned block per input shape (a streaming run feeds the
    detector three shapes on two threads; the patterns held 95 MiB more at 1080p); on other
    devices ONNX Runtime's default stays."""
    from deid_edit.backend.ort import make_session
    from deid_edit.models import model_path

    session = make_session(model_path("centerface"), "cpu", 1)
    assert session.get_session_options().enable_mem_pattern is False
