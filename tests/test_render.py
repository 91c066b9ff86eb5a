"""Anonymizers and region geometry: pure numpy on synthetic frames, asserting on pixels."""

from __future__ import annotations

import numpy as np
import pytest

from deid_edit.config import RenderConfig
from deid_edit.errors import ConfigError
from deid_edit.render import ANONYMIZERS, get_anonymizer
from deid_edit.render.shapes import head_box, mask_bounds, mask_for, region_mask, to_coded
from deid_edit.types import FaceRegion

BOX = np.array([100, 60, 180, 160], np.float32)


def region(box=BOX, margin=0.0, track_id=1) -> FaceRegion:
    return FaceRegion(identity_id=0, track_id=track_id, box=np.asarray(box, np.float32), landmarks=None, observed=True, margin=margin)


def textured(h=240, w=320, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def covered(alpha_img: np.ndarray, box: np.ndarray) -> float:
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return float((alpha_img[y1:y2, x1:x2] >= 0.999).mean())


def full_alpha(r: FaceRegion, shape: str, padding: float, feather: float, hw=(240, 320)) -> np.ndarray:
    m = region_mask(r, hw, shape, padding, feather)
    a = np.zeros(hw, np.float32)
    a[m.slices] = m.alpha
    return a


@pytest.mark.parametrize("shape", ["ellipse", "box"])
def test_default_padding_covers_whole_face_box(shape):
    cfg = RenderConfig(shape=shape)
    assert covered(full_alpha(region(), shape, cfg.padding, cfg.feather), BOX) == 1.0


def test_feather_lies_outside_the_covered_area():
    hard = full_alpha(region(), "ellipse", 0.25, 0.0)
    soft = full_alpha(region(), "ellipse", 0.25, 0.3)
    assert np.all(soft[hard >= 0.999] >= 0.999), "feathering uncovered pixels"
    assert ((soft > 0) & (soft < 1)).sum() > 0


def test_margin_grows_the_mask():
    small = full_alpha(region(), "ellipse", 0.25, 0.1)
    big = full_alpha(region(margin=0.3), "ellipse", 0.25, 0.1)
    assert (big >= 1).sum() > 1.3 * (small >= 1).sum()
    assert np.all(big[small >= 1] >= 1)


def test_mask_bounds_and_the_shared_alpha():
    """The YUV path asks for a region's ROI without its alpha (``mask_bounds``) and the same mask
    twice: the bounds are the mask's, and the alpha, shared between calls, cannot be changed."""
    cfg = RenderConfig()
    m = mask_for(region(), (240, 320), cfg)
    assert mask_bounds(region(), (240, 320), cfg) == (m.x0, m.y0, m.x1, m.y1)
    assert mask_for(region(), (240, 320), cfg).alpha is m.alpha
    with pytest.raises(ValueError):
        m.alpha[0, 0] = 0.5
    assert mask_bounds(region(box=[-500, -500, -400, -400]), (240, 320), cfg) is None


def test_regions_outside_the_frame_are_ignored():
    assert region_mask(region(box=[-500, -500, -400, -400]), (240, 320), "ellipse", 0.25, 0.1) is None


def _face_change(mode: str, **kw) -> tuple[np.ndarray, np.ndarray]:
    img = textured()
    out = get_anonymizer(mode).apply(img.copy(), [region()], RenderConfig(mode=mode, **kw))
    return img, out


def test_blur_destroys_the_face_detail():
    img, out = _face_change("blur")
    x1, y1, x2, y2 = BOX.astype(int)
    face_in, face_out = img[y1:y2, x1:x2].astype(float), out[y1:y2, x1:x2].astype(float)
    # high-frequency energy (neighbour differences) nearly gone, and no correlation left with the input
    hf_in = np.abs(np.diff(face_in, axis=1)).mean()
    hf_out = np.abs(np.diff(face_out, axis=1)).mean()
    assert hf_out < 0.05 * hf_in
    corr = np.corrcoef(face_in.ravel(), face_out.ravel())[0, 1]
    assert abs(corr) < 0.1
    # far outside the region nothing changed
    assert np.array_equal(img[:20, :20], out[:20, :20])


def test_blur_is_strong_on_a_real_face_shape():
    """A smooth gradient face: blur keeps only a handful of samples across the face."""
    yy, xx = np.mgrid[0:240, 0:320]
    img = np.stack([(xx * 0.8) % 256, (yy * 1.1) % 256, ((xx + yy) * 0.5) % 256], -1).astype(np.uint8)
    img[80:140, 120:160] = 255  # a bright feature inside the face
    out = get_anonymizer("blur").apply(img.copy(), [region()], RenderConfig())
    assert out[80:140, 120:160].mean() < 230, "bright feature survived the blur"


def test_pixelate_has_blocks_relative_to_face():
    img, out = _face_change("pixelate", blocks=8, feather=0.0)
    x1, y1, x2, y2 = BOX.astype(int)
    face = out[y1 + 5 : y2 - 5, x1 + 5 : x2 - 5].reshape(-1, 3)
    distinct = len(np.unique(face, axis=0))
    assert 4 <= distinct <= 200, distinct  # a few dozen blocks, not thousands of pixels


def test_solid_fills_with_the_colour():
    _, out = _face_change("solid", color=(10, 200, 30))
    x1, y1, x2, y2 = BOX.astype(int)
    assert np.all(out[y1:y2, x1:x2] == (10, 200, 30))


def test_matte_is_white_on_black():
    _, out = _face_change("matte")
    x1, y1, x2, y2 = BOX.astype(int)
    assert np.all(out[y1:y2, x1:x2] == 255)
    assert np.all(out[:10, :10] == 0)
    assert get_anonymizer("matte").full_frame


def test_debug_draws_but_does_not_hide():
    img, out = _face_change("debug")
    assert not np.array_equal(img, out)
    x1, y1, x2, y2 = BOX.astype(int)
    assert (img[y1 + 20 : y2 - 20, x1 + 20 : x2 - 20] == out[y1 + 20 : y2 - 20, x1 + 20 : x2 - 20]).mean() > 0.8
    assert not get_anonymizer("debug").hides_faces


def test_registry_drives_mode_validation():
    assert {"blur", "pixelate", "solid", "matte", "debug"} <= set(ANONYMIZERS)
    with pytest.raises(ConfigError, match="--mode"):
        RenderConfig(mode="sparkles")
    with pytest.raises(ConfigError, match="--padding"):
        RenderConfig(padding=-0.1)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_to_coded_matches_rot90(k):
    """A region drawn upright must land on the same pixels as drawing in coded frame then rotating."""
    coded_h, coded_w = 120, 200
    coded = np.zeros((coded_h, coded_w), np.uint8)
    up_h, up_w = np.rot90(coded, k).shape
    box = np.array([10, 20, 50, 45], np.float32)
    assert box[2] <= up_w and box[3] <= up_h
    r = region(box=box)
    (rc,) = to_coded([r], k, coded_w, coded_h)
    a = full_alpha(rc, "box", 0.0, 0.0, (coded_h, coded_w))
    upright = np.rot90(a, k)
    assert covered(upright, box) == 1.0
    assert (upright >= 1).sum() == pytest.approx((box[2] - box[0]) * (box[3] - box[1]), rel=0.1)


def test_yuv420_in_place_changes_only_the_masks(sample_clip):
    """Region-only conversion: the face changes, every pixel outside the masks stays bit-identical."""
    import av

    from deid_edit.render.planes import apply_yuv420

    path, truth = sample_clip
    with av.open(str(path)) as c:
        frame = next(iter(c.decode(video=0)))
    before = [np.asarray(memoryview(p)).copy() for p in frame.planes]
    rgb_before = frame.to_ndarray(format="rgb24")
    r = region(box=truth.faces[0][0])
    cfg = RenderConfig(mode="solid", color=(255, 0, 255))
    assert apply_yuv420(frame, [r], get_anonymizer("solid"), cfg)
    rgb_after = frame.to_ndarray(format="rgb24")
    hw = (truth.height, truth.width)
    m = mask_for(r, hw, cfg)
    touched = np.zeros(hw, bool)
    touched[m.slices] = m.alpha > 0
    y_after = np.asarray(memoryview(frame.planes[0])).reshape(frame.planes[0].height, -1)[: hw[0], : hw[1]]
    y_before = before[0].reshape(frame.planes[0].height, -1)[: hw[0], : hw[1]]
    assert np.array_equal(y_after[~touched], y_before[~touched])
    import cv2

    inner = cv2.erode((m.alpha >= 1).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # chroma is 2x2
    full = np.zeros(hw, bool)
    full[m.slices] = inner
    assert np.abs(rgb_after[full].astype(int) - (255, 0, 255)).max() < 12
    assert not np.array_equal(rgb_after, rgb_before)


def test_pixelate_refuses_a_mosaic_fine_enough_to_recognize():
    """benchmarks/pixelate.py: at 12 blocks across the face the audit's recognizer matched
    hamilton_stage faces through the mosaic, at 16 LFW pairs 8.5% of the time; 8 (the default) and
    10 never on footage. Finer settings are refused with the flag and the allowed range."""
    from deid_edit.config import MAX_BLOCKS

    assert RenderConfig().blocks == 8 and MAX_BLOCKS == 10
    RenderConfig(mode="pixelate", blocks=MAX_BLOCKS)
    with pytest.raises(ConfigError, match=r"--blocks 12 .*2\.\.10"):
        RenderConfig(mode="pixelate", blocks=12)


def test_head_region_covers_more_than_the_face_region():
    """--region head (the default of the modes that hide faces) reaches past the face region on both
    sides and above it, never less; the cloak keeps to the face."""
    r = region(box=[100.0, 80.0, 160.0, 160.0])
    hw = (240, 320)
    face = mask_for(r, hw, RenderConfig(region="face"))
    head = mask_for(r, hw, RenderConfig())
    assert RenderConfig().reach == "head" and RenderConfig(mode="cloak").reach == "face"
    fa, ha = np.zeros(hw, bool), np.zeros(hw, bool)
    fa[face.slices] = face.alpha >= 1
    ha[head.slices] = head.alpha >= 1
    assert (ha | fa).sum() == ha.sum() and ha.sum() > 1.3 * fa.sum()
    x1, y1, x2, y2 = head_box(r.box)
    assert x1 < 100 and x2 > 160 and y1 < 80 and y2 == 160
    with pytest.raises(ConfigError, match="--region"):
        RenderConfig(region="body")
