"""The cloak anonymizer (``--mode cloak``): each face redrawn by the learned generator as someone else.

Input: an RGB frame (or a ``render.planes`` crop) and its ``FaceRegion`` list. Output: the frame,
cloaked in place (next: encode). Per frame: (1) weak tracks, faces under ``MIN_CLOAK_FACE_PX`` and
tracks that failed (4) are blurred; (2) the rest are aligned on the recognizer's chip and embedded,
the descriptor averaged per track (``DESCRIPTOR_EMA``: no identity flicker); (3) the generator
(``models/cloak.onnx``, or ``DEID_EDIT_CLOAK_MODEL``; ONNX Runtime or torch) redraws the chip, seam
colour matched per track; (4) the written face is embedded again and, while the recognizer still
knows it, blurred with the rest of its track (privacy fails closed); (5) the chip is pasted back
through the inverse warp, alpha = the generator's mask (gained, feathered) cut by the region's mask.

Each track is decided once, before rendering where the pipeline can (``sample_frames`` and
``decide``: ``SAMPLES_PER_TRACK`` frames spread over the track), else on the first frame it is
cloaked in: it is cloaked only if the exact recognizer does not know it under any test view
(``reid_views``: mirrored, rescaled, shifted, JPEG), and blurred for its whole length otherwise.
The fast per-frame check of (4) still guards every frame after that.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..config import RenderConfig
from ..embed import CHIP_SIZE, DEFAULT_RECOGNIZER, SAME_PERSON_L2, FaceEmbedder, chip_transform, distance, warp_chip
from ..errors import ModelError
from ..nets import CROP_SIZE
from ..types import FaceRegion, Track
from .classic import Blur
from .shapes import RegionMask, mask_for

log = logging.getLogger(__name__)

MODEL_NAME = "cloak"  # manifest entry (and how the torch backend builds the module)
INPUTS, OUTPUTS = ["image", "descriptor"], ["cloaked", "mask"]  # the generator's graph (generator.export)
MODEL_ENV = "DEID_EDIT_CLOAK_MODEL"  # path override (tests, benchmarks, a model under evaluation)
VERIFY_ENV = "DEID_EDIT_CLOAK_VERIFY"  # "0" turns the re-identification check off (benchmarks)
# Face box width (source pixels) below which a face is blurred instead: at 48 px the eyes are
# ~20 px apart, the chip is upsampled ~2.5x and the generator would paint on interpolated mush.
MIN_CLOAK_FACE_PX = 48.0
BATCH = 16  # faces per generator/recognizer call
DESCRIPTOR_EMA = 0.3  # weight of the newest frame in the per-track descriptor average
GAIN_EMA = 0.3  # same for the seam colour gain
GAIN_LIMITS = (0.75, 1.33)  # a larger correction means the ring is not skin (occlusion, hair): stay near 1
RING_PX = 6  # width of the seam ring inside the mask edge, generator pixels
MASK_CUT = 0.5  # the mask level taken as the generator's edge for the ring
MASK_GAIN = 4.0  # alpha = clip(MASK_GAIN * m): full strength wherever m >= 0.25
MASK_FEATHER_PX = 1.5  # Gaussian sigma of the alpha in generator pixels (scales with the face)
CHIP_BORDER_PX = 4  # alpha fades to 0 over this many generator pixels at the chip edge
VERIFY_MARGIN = 0.05  # extra L2 demanded beyond SAME_PERSON_L2 (fast vs exact recognizer gap)
SAMPLES_PER_TRACK = 8  # frames of a track cloaked and checked before rendering: all must pass
# what a decision demands beyond the per-frame check's threshold: a track decided on samples that
# pass only just fails the per-frame check on other frames and switches to blur mid-shot (sofa,
# 4 samples and no extra margin: cloaked 66 frames, then blurred)
DECIDE_MARGIN = 0.05
VIEW_SHIFT_PX = 3.0  # test-time changes of the check (chip pixels of the 150 chip)
VIEW_SCALES = (0.95, 1.05)
VIEW_JPEG_QUALITY = 70
VIEWS = ("as written", "mirrored", "scaled 0.95", "scaled 1.05", "shifted +3 px", "shifted -3 px", "JPEG 70")
# Where the 5 landmarks sit in a plan region's box (x, y as fractions of its width/height) when a
# region carries none: the mean over a generated sample clip's CenterFace detections (both photos,
# 20 frames), in boxes the plan grew upward by 12% (plan.TOP_EXTRA).
BOX_LANDMARKS = np.array([[0.29, 0.435], [0.71, 0.435], [0.50, 0.593], [0.32, 0.731], [0.68, 0.731]], np.float64)


@dataclass
class CloakStats:
    """What one render did with its faces, for the render summary (``Cloak.stats``)."""

    faces: int = 0  # face samples seen (frames x faces)
    cloaked: int = 0
    small: int = 0  # blurred: narrower than MIN_CLOAK_FACE_PX
    unverified: int = 0  # blurred: the recognizer still knew the cloaked face (or its track)
    weak: int = 0  # blurred: a weak track (maybe no face: a new face must not be painted on a plant)
    estimated_landmarks: int = 0  # cloaked from landmarks estimated from the box
    tracks_cloaked: int = 0  # tracks whose samples all passed the check under every test view
    tracks_blurred: int = 0  # tracks that failed it: blurred for their whole length
    switched: int = 0  # tracks that passed, then failed the per-frame check: blurred from there on

    @property
    def blurred(self) -> int:
        return self.small + self.unverified + self.weak

    def summary(self) -> str:
        return (
            f"cloak: {self.cloaked} of {self.faces} face samples cloaked, {self.blurred} blurred "
            f"({self.small} too small, {self.unverified} still recognizable, {self.weak} low-score, maybe no face); "
            f"tracks: {self.tracks_cloaked} cloaked, {self.tracks_blurred} blurred whole (still recognized in a test view), "
            f"{self.switched} blurred from the frame the per-frame check failed"
        )


# Height/width of the part of a region the BOX_LANDMARKS fractions apply to: 1.4 estimated the
# detected landmarks best among 1.4/1.51/1.6/1.7 on four clips' plans (mean error 0.09-0.64 of the
# inter-ocular distance; 0.12-0.59 with the regions before plan.MIN_ASPECT).
BOX_ASPECT = 1.4


def landmarks_from_box(box: np.ndarray) -> np.ndarray:
    """(5,2) landmarks estimated from a region box (xyxy), for regions without detected ones.

    A region taller than ``BOX_ASPECT`` grew upward over a foreshortened face (``plan.MIN_ASPECT``):
    the face sits in its bottom part, which is what the fractions are applied to."""
    x1, y1, x2, y2 = (float(v) for v in box)
    y1 = max(y1, y2 - BOX_ASPECT * (x2 - x1))
    return np.array([x1, y1]) + BOX_LANDMARKS * np.array([x2 - x1, y2 - y1])


def generator_transform(landmarks: np.ndarray) -> np.ndarray:
    """2x3 image -> generator-chip (128 px) transform: the 150 chip's, scaled as the resize does.

    With pixel centres at integers an area resize by s maps c150 to (c150 + 0.5) * s - 0.5.
    """
    m = chip_transform(np.asarray(landmarks, np.float64))
    s = CROP_SIZE / CHIP_SIZE
    out = m * s
    out[:, 2] += 0.5 * s - 0.5
    return out


def seam_gain(x: np.ndarray, y: np.ndarray, m: np.ndarray) -> np.ndarray | None:
    """Per-channel gain that makes the generated face's mean colour on the ring just inside the
    mask edge equal to the original's there; None when the mask has no usable ring.

    ``x``/``y`` are the input and cloaked chips (H,W,3 float), ``m`` the mask (H,W). ``m*z`` is
    recovered exactly as ``y - (1-m)*x``, so no division by a small mask happens per pixel.
    """
    inside = (m >= MASK_CUT).astype(np.uint8)
    core = cv2.erode(inside, np.ones((2 * RING_PX + 1, 2 * RING_PX + 1), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    ring = (inside > 0) & (core == 0)
    if ring.sum() < 4 * RING_PX:
        return None
    mz = y[ring] - (1.0 - m[ring])[:, None] * x[ring]
    wsum = float(m[ring].sum())
    z_mean = mz.sum(axis=0) / wsum
    x_mean = (m[ring][:, None] * x[ring]).sum(axis=0) / wsum
    return np.clip(x_mean / np.maximum(z_mean, 1.0), *GAIN_LIMITS).astype(np.float32)


def chip_alpha(m: np.ndarray) -> np.ndarray:
    """The paste-back alpha in generator-chip space (see the module docstring, step 5)."""
    a = np.clip(m * MASK_GAIN, 0.0, 1.0).astype(np.float32)
    a = cv2.GaussianBlur(a, (0, 0), MASK_FEATHER_PX, borderType=cv2.BORDER_CONSTANT)
    ramp = np.clip((np.arange(CROP_SIZE, dtype=np.float32) + 0.5) / CHIP_BORDER_PX, 0.0, 1.0)
    ramp = np.minimum(ramp, ramp[::-1])
    return a * ramp[:, None] * ramp[None, :]


def paste(image: np.ndarray, rmask: RegionMask, chip: np.ndarray, alpha: np.ndarray, transform: np.ndarray) -> None:
    """Warp ``chip`` (128x128x3) and its ``alpha`` back into ``image`` through the inverse of
    ``transform`` (image -> chip), only inside the region's mask and its feather."""
    ys, xs = rmask.slices
    roi = image[ys, xs]
    rh, rw = roi.shape[:2]
    t = np.array(transform, np.float64)
    t[:, 2] += t[:, :2] @ np.array([rmask.x0, rmask.y0], np.float64)  # roi pixel -> chip
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    back = cv2.warpAffine(chip, t, (rw, rh), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    a = cv2.warpAffine(alpha, t, (rw, rh), flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    a = (a * rmask.alpha)[..., None]
    out = roi.astype(np.float32) * (1.0 - a) + back * a
    image[ys, xs] = np.where(a > 0, np.clip(out + 0.5, 0, 255).astype(np.uint8), roi)


def _around(transform: np.ndarray, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """``transform`` (image -> 150 chip) followed by a scale about the chip centre and a shift."""
    c = (CHIP_SIZE - 1) / 2.0
    a = np.array([[scale, 0.0, (1 - scale) * c + shift], [0.0, scale, (1 - scale) * c + shift]])
    t = np.asarray(transform, np.float64)
    return np.hstack([a[:, :2] @ t[:, :2], (a[:, :2] @ t[:, 2] + a[:, 2])[:, None]])


def reid_views(image: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """(len(VIEWS),150,150,3) chips of one face as a re-identifier could cut it: the renderer's own
    alignment, mirrored, 5% smaller and larger, shifted 3 px both ways, and after a JPEG round trip
    at quality 70. Why: a generator trained against one network's view can fool that exact view
    and nothing else; a face that passes only the untouched view is not de-identified."""
    base = warp_chip(image, transform)
    views = [base, np.ascontiguousarray(base[:, ::-1])]
    views += [warp_chip(image, _around(transform, scale=s)) for s in VIEW_SCALES]
    views += [warp_chip(image, _around(transform, shift=d)) for d in (VIEW_SHIFT_PX, -VIEW_SHIFT_PX)]
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(base, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, VIEW_JPEG_QUALITY])
    views.append(cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) if ok else base)
    return np.stack(views)


class Cloak:
    """Learned de-identification (``--mode cloak``): see the module docstring.

    One instance renders one video: it keeps per-track state (descriptor and colour averages,
    tracks that failed verification) and the counts in ``stats``. ``model``, ``device``,
    ``backend``, ``threads`` and ``verify`` override what is otherwise read from
    RenderConfig/env/manifest.
    """

    name = "cloak"
    full_frame = False
    hides_faces = True

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        device: str | None = None,
        threads: int | None = None,
        verify: bool | None = None,
        backend: str | None = None,
    ) -> None:
        self.model = Path(model) if model else None
        self.device = device
        self.backend = backend
        self.threads = threads
        if verify is None:
            verify = os.environ.get(VERIFY_ENV, "1").strip().lower() not in {"0", "false", "no", "off"}
        self.verify = verify
        self.stats = CloakStats()
        self._model: Any = None  # backend.InferenceModel: (image, descriptor) -> (cloaked, mask)
        self._embedder: FaceEmbedder | None = None
        self._descriptors: dict[int, np.ndarray] = {}
        self._gains: dict[int, np.ndarray] = {}
        self._failed: set[int] = set()  # tracks blurred: failed the check
        self._passed: set[int] = set()  # tracks decided: cloaked (the per-frame check still guards them)
        self._samples: dict[int, list[int]] = {}  # frame -> tracks checked there before rendering
        self._verdicts: dict[int, list[bool]] = {}  # track -> its samples' results
        self._exact: FaceEmbedder | None = None
        self.cloaked_frames: dict[int, int] = {}  # track -> frames it was cloaked in (the first ones it reached the generator in)
        self._blur = Blur()

    # -- model ---------------------------------------------------------------------------------
    def model_file(self, cfg: RenderConfig | None = None) -> Path:
        """The generator file: argument, $DEID_EDIT_CLOAK_MODEL, manifest (``cfg`` is not consulted:
        it names no model; the parameter keeps the anonymizer's pre-flight signature)."""
        from ..models import model_path

        path = self.model or os.environ.get(MODEL_ENV) or None
        if path is None:
            from ..models import manifest

            if MODEL_NAME not in manifest():
                raise ModelError(
                    "no cloak model ships with this version yet (models/README.md); train one with 'deid-edit train-cloak' and "
                    f"'deid-edit export-cloak' and point {MODEL_ENV} at it, or use --mode blur"
                )
            return model_path(MODEL_NAME)
        path = Path(path)
        if not path.is_file():
            raise ModelError(
                f"{path}: cloak model not found (set by {MODEL_ENV} or the cloak model option); make one with 'deid-edit export-cloak'"
            )
        return path

    def _load(self, cfg: RenderConfig) -> None:
        from ..backend import load_model, resolve_backend

        device = self.device or cfg.device
        backend = resolve_backend(self.backend or cfg.backend, device)
        threads = self.threads or 0
        path = self.model_file(cfg)
        model = load_model(MODEL_NAME, backend, device, threads, path=path)
        # ONNX Runtime feeds inputs by position: the graph must be the generator's (torch checks metadata and weights)
        names = (getattr(model, "input_names", INPUTS), getattr(model, "output_names", OUTPUTS))
        if names != (INPUTS, OUTPUTS):
            raise ModelError(f"{path}: not a cloak generator (inputs {names[0]}, outputs {names[1]}; expected {INPUTS} -> {OUTPUTS})")
        self._model = model
        self._embedder = FaceEmbedder(device=device, threads=threads, batch_size=BATCH, recognizer=DEFAULT_RECOGNIZER, backend=backend)
        self._exact = FaceEmbedder(device=device, threads=threads, batch_size=BATCH, recognizer="exact", backend=backend)
        log.info("cloak: %s on %s, recognizer on %s", path, model.provider, self._embedder.provider)

    def generate(self, chips: np.ndarray, descriptors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N,128,128,3) float32 cloaked chips and (N,128,128) masks for uint8/float chips and descriptors."""
        out_y = np.empty((len(chips), CROP_SIZE, CROP_SIZE, 3), np.float32)
        out_m = np.empty((len(chips), CROP_SIZE, CROP_SIZE), np.float32)
        for s in range(0, len(chips), BATCH):
            blob = np.ascontiguousarray(np.asarray(chips[s : s + BATCH], np.float32).transpose(0, 3, 1, 2))
            desc = np.ascontiguousarray(descriptors[s : s + BATCH], np.float32)
            y, m = self._model.run(blob, desc)
            out_y[s : s + len(blob)] = y.transpose(0, 2, 3, 1)
            out_m[s : s + len(blob)] = m[:, 0]
        return out_y, out_m

    # -- the decision per track, before rendering ---------------------------------------------
    def sample_frames(self, tracks: Sequence[Track], frame_count: int) -> list[int]:
        """Frames to show ``decide`` before rendering: ``SAMPLES_PER_TRACK`` per track, spread
        over the observed frames where its face is large enough to cloak. A track is then cloaked
        for its whole length only if every sample passes the check under every test view, and
        blurred for its whole length otherwise: no switch in the middle of a shot."""
        self._samples.clear()
        for t in tracks:
            sides = np.minimum(t.boxes[:, 2] - t.boxes[:, 0], t.boxes[:, 3] - t.boxes[:, 1])
            ok = np.flatnonzero(t.observed & (sides >= MIN_CLOAK_FACE_PX) & (t.frames < frame_count))
            if t.landmarks is None or not len(ok):
                continue  # nothing to check ahead: decided on the first frame it is cloaked in
            picks = ok[np.unique(np.linspace(0, len(ok) - 1, SAMPLES_PER_TRACK).round().astype(int))]
            for f in t.frames[picks].tolist():
                self._samples.setdefault(int(f), []).append(t.track_id)
        return sorted(self._samples)

    def decide(self, image: np.ndarray, regions: Sequence[FaceRegion], frame: int, cfg: RenderConfig) -> None:
        """Cloak the sampled tracks' faces of ``frame`` (on a copy) and record whether each one
        passes the check under every test view (``reid_views``)."""
        wanted = set(self._samples.get(frame, ()))
        faces = []
        for r in regions:
            if r.track_id not in wanted or r.landmarks is None:
                continue
            rmask = mask_for(r, image.shape[:2], cfg)
            if rmask is not None and float(r.box[2] - r.box[0]) >= MIN_CLOAK_FACE_PX:
                faces.append((r, rmask, np.asarray(r.landmarks, np.float64)))
        if not faces:
            return
        passed = self._cloak(image.copy(), faces, cfg, checked=[True] * len(faces), decide=True)
        for (r, _, _), ok in zip(faces, passed):
            self._verdicts.setdefault(r.track_id, []).append(ok)
        for r, _, _ in faces:  # the samples are out of order: they must not seed the per-track averages
            self._descriptors.pop(r.track_id, None)
            self._gains.pop(r.track_id, None)

    def end_decisions(self) -> None:
        """Fix the decisions of the sampled tracks (``decide`` saw their samples)."""
        for track_id, results in self._verdicts.items():
            self._decided(track_id, all(results))
        if self._verdicts:
            good = sum(map(all, self._verdicts.values()))
            log.info("cloak: %d of %d tracks pass the check under every test view", good, len(self._verdicts))
        self._verdicts.clear()

    def _decided(self, track_id: int, ok: bool) -> None:
        if ok:
            self._passed.add(track_id)
            self.stats.tracks_cloaked += 1
        else:
            self._failed.add(track_id)
            self.stats.tracks_blurred += 1

    # -- per track state -----------------------------------------------------------------------
    def _smooth(self, store: dict[int, np.ndarray], track_id: int, value: np.ndarray, weight: float) -> np.ndarray:
        prev = store.get(track_id)
        value = value if prev is None else (1.0 - weight) * prev + weight * value
        store[track_id] = value
        return value

    # -- the anonymizer ------------------------------------------------------------------------
    def apply(self, image: np.ndarray, regions: Sequence[FaceRegion], cfg: RenderConfig) -> np.ndarray:
        blur: list[FaceRegion] = []
        faces: list[tuple[FaceRegion, RegionMask, np.ndarray]] = []
        for r in regions:
            rmask = mask_for(r, image.shape[:2], cfg)
            if rmask is None:
                continue
            self.stats.faces += 1
            if r.weak:
                self.stats.weak += 1
                blur.append(r)
            elif float(r.box[2] - r.box[0]) < MIN_CLOAK_FACE_PX:
                self.stats.small += 1
                blur.append(r)
            elif r.track_id in self._failed:
                self.stats.unverified += 1
                blur.append(r)
            else:
                if r.landmarks is None:
                    self.stats.estimated_landmarks += 1
                lm = landmarks_from_box(r.box) if r.landmarks is None else np.asarray(r.landmarks, np.float64)
                faces.append((r, rmask, lm))
        if faces:
            first = [r.track_id not in self._passed for r, _, _ in faces]  # not decided before rendering: decided here
            ok = self._cloak(image, faces, cfg, checked=first)
            for (r, _, _), good, new in zip(faces, ok, first):
                if new:
                    self._decided(r.track_id, bool(good))
                elif not good:
                    self._passed.discard(r.track_id)
                    self._failed.add(r.track_id)
                    self.stats.switched += 1
                    log.info("cloak: track %d failed the per-frame check; blurred from here on", r.track_id)
                if good:
                    self.stats.cloaked += 1
                    self.cloaked_frames[r.track_id] = self.cloaked_frames.get(r.track_id, 0) + 1
                else:
                    self.stats.unverified += 1
                    blur.append(r)
        if blur:
            self._blur.apply(image, blur, cfg)
        return image

    def _cloak(
        self,
        image: np.ndarray,
        faces: list[tuple[FaceRegion, RegionMask, np.ndarray]],
        cfg: RenderConfig,
        checked: Sequence[bool] = (),
        decide: bool = False,
    ) -> np.ndarray:
        """Cloak ``faces`` in ``image``; returns for each whether it was written. A face is
        written only if the fast recognizer no longer knows it (every frame), and for the faces
        ``checked`` also the exact recognizer under every test view (``reid_views``). ``decide``:
        only judge (the caller's image is a copy)."""
        if self._model is None:
            self._load(cfg)
        assert self._embedder is not None and self._exact is not None
        transforms = [chip_transform(lm) for _, _, lm in faces]
        chips150 = np.stack([warp_chip(image, t) for t in transforms])
        raw = self._embedder.embed(chips150)
        desc = np.stack([self._smooth(self._descriptors, r.track_id, d, DESCRIPTOR_EMA) for (r, _, _), d in zip(faces, raw)])
        x = np.stack([cv2.resize(c, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA) for c in chips150]).astype(np.float32)
        y, m = self.generate(x, desc)
        for i, (r, _, _) in enumerate(faces):
            gain = seam_gain(x[i], y[i], m[i])
            gain = self._smooth(self._gains, r.track_id, np.ones(3, np.float32) if gain is None else gain, GAIN_EMA)
            y[i] = np.clip(y[i] + (gain - 1.0) * (y[i] - (1.0 - m[i])[..., None] * x[i]), 0.0, 255.0)
        alphas = [chip_alpha(mi) for mi in m]
        saved = [image[rmask.slices].copy() for _, rmask, _ in faces]
        for i, (_, rmask, lm) in enumerate(faces):
            paste(image, rmask, y[i], alphas[i], generator_transform(lm))
        still = np.zeros(len(faces), bool)
        if self.verify:  # judged on the frame as written, re-cut at the same alignment
            recut = np.stack([warp_chip(image, t) for t in transforms])
            limit = SAME_PERSON_L2 + VERIFY_MARGIN + (DECIDE_MARGIN if decide else 0.0)
            still = distance(self._embedder.embed(recut), raw) < limit
            robust = [i for i in range(len(faces)) if i < len(checked) and checked[i] and not still[i]]
            if robust:
                views = np.concatenate([reid_views(image, transforms[i]) for i in robust])
                seen = self._exact.embed(views).reshape(len(robust), len(VIEWS), -1)
                before = self._exact.embed(chips150[robust])
                closest = distance(seen, before[:, None, :]).min(axis=1)
                for i, d in zip(robust, closest):
                    still[i] = d < limit
        if decide:
            return ~still
        if still.any():  # undo every paste (overlaps!), then paste only the faces that passed
            for (_, rmask, _), roi in zip(reversed(faces), reversed(saved)):
                image[rmask.slices] = roi
            for i, (_, rmask, lm) in enumerate(faces):
                if not still[i]:
                    paste(image, rmask, y[i], alphas[i], generator_transform(lm))
        return ~still
