"""The engine's entry points: ``analyze`` (video -> Plan), ``render`` (video + Plan -> anonymized
video), ``run`` (both) and ``batch`` (``run`` over a folder tree).

analyze decodes once and feeds every frame to both the face detector (batched, at a resolution
chosen from ``--min-face``) and the shot detector; tracks, gap filling and identities follow on
detections only. render decodes again, anonymizes the frames that hold regions, passes the others
through untouched, copies audio and other streams packet by packet, and encodes. Privacy fails
closed: a frame the plan does not cover stops the render and nothing is written.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from ._version import __version__
from .config import AnalyzeConfig, DetectConfig, EncodeConfig, IdentityConfig, RenderConfig
from .detect import FaceDetector, create_detector
from .errors import DeidError, EncodeError, InputError, PlanError
from .geometry import nms
from .identities import (
    DescriptorSampler,
    Selection,
    SelectionReport,
    build_identities,
    identities_from_tracks,
    reference_descriptors,
    select,
)
from .io.decode import VideoReader, open_input, probe, upright_k
from .io.encode import check_codec, open_writer
from .io.metadata import removed_by_default
from .plan import Plan, load_plan, save_plan
from .progress import NullProgress, ProgressSink
from .render import get_anonymizer
from .render.planes import apply_yuv420
from .render.shapes import to_coded
from .shots import ShotDetector, load_cut_list
from .sidecars import default_output
from .smooth import Scene, complete_tracks
from .track import RawTrack, track_video
from .types import Frame, FrameDetections, Shot, Track

log = logging.getLogger(__name__)

WEAK_MIN_FACE = 0.5  # weak tracks start from low-score boxes at least this x --min-face (hamilton's dim faces: 25-60 px)
BUSY_FACES = 3  # a frame with this many faces, or with a face under 2x --min-face, is a busy scene
BUSY_HOLD = 2  # seconds a busy scene keeps the full-resolution sweep on
QUIET_FACE = 4  # a quiet scene's faces are all at least this x --min-face (and fewer than BUSY_FACES)
COARSE_EVERY_CPU = 3  # DetectConfig.coarse_every when automatic, on the CPU


def crowded(det: FrameDetections, threshold: float, small_side: float) -> bool:
    """Whether a frame's confident faces number ``BUSY_FACES`` or more, or any is under ``small_side``
    pixels (short side): what turns the small-face sweep on and keeps the half-scale pass off."""
    sure = det.scores >= threshold
    sides = np.minimum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])[sure]
    return bool(sure.sum() >= BUSY_FACES or (sides < small_side).any())


class SmallFaceSweep:
    """Full-resolution detection every few frames while the scene is busy (several or small faces).

    Detecting at a reduced scale is what keeps a talking head fast, but it misses the distant faces
    of a crowd. Where the reduced-scale pass sees a crowd or small faces, every ``sweep_every``-th
    frame is also searched at full resolution; faces found only there become tracks whose missing
    frames are filled and extended like any other (so late discovery still covers earlier frames).
    """

    def __init__(self, detector: FaceDetector, cfg: DetectConfig, low: float, rate: Fraction) -> None:
        self.detector, self.cfg, self.low = detector, cfg, low
        self.hold = max(1, int(round(float(rate) * BUSY_HOLD)))
        self.busy_until = -1
        self.frames = 0  # frames swept, for the record
        self.pending: tuple[int, FrameDetections] | None = None

    def run(self, frame: Frame, detections: list[FrameDetections]) -> None:
        """Update the busy state from recent detections; sweep ``frame`` if busy (merged by ``merge``)."""
        for det in detections[-self.cfg.sweep_every :]:
            if crowded(det, self.cfg.threshold, 2 * self.cfg.min_face):
                self.busy_until = det.frame_index + self.hold
        if frame.full is None or frame.index > self.busy_until:
            return
        self.frames += 1
        (full,) = self.detector.detect([frame.full], [frame.index], 1.0, self.low)
        self.pending = (frame.index, full)

    def merge(self, det: FrameDetections) -> FrameDetections:
        """``det`` with the sweep's faces of the same frame added (duplicates suppressed)."""
        pending = self.pending
        if pending is None or pending[0] != det.frame_index or not len(pending[1]):
            return det
        self.pending = None
        extra = pending[1]
        boxes = np.concatenate([det.boxes, extra.boxes])
        scores = np.concatenate([det.scores, extra.scores])
        keep = nms(boxes, scores, 0.3)
        lms = None
        if det.landmarks is not None and extra.landmarks is not None:
            lms = np.concatenate([det.landmarks, extra.landmarks])[keep]
        return FrameDetections(det.frame_index, boxes[keep], scores[keep], lms)


class CoarsePass:
    """Half-scale detection on most frames of a quiet scene: no face, or a few large ones.

    Detection is most of the analysis time, and a talking head does not need the resolution that a
    crowd does: a face of ``QUIET_FACE`` x ``--min-face`` is still twice the detector's reliable
    size at half the scale (a quarter of the cost). Every ``coarse_every``-th frame stays at the
    normal scale, so a small face that walks in is found within that many frames; its track is
    then extended backwards over the frames before (``TrackConfig.extend`` >= ``coarse_every`` - 1),
    and the scene stops being quiet. Busy scenes (the small-face sweep is on) are never coarse.
    """

    def __init__(self, cfg: DetectConfig, provider: str) -> None:
        self.cfg = cfg
        cpu = provider == "CPUExecutionProvider"
        self.every = cfg.coarse_every if cfg.coarse_every >= 0 else (COARSE_EVERY_CPU if cpu else 0)
        self.frames = 0  # frames detected coarse, for the record

    def candidate(self, index: int, sweep: SmallFaceSweep) -> bool:
        """Whether ``index`` could be coarse (then the caller first detects what it has pending,
        so that the decision sees the latest normal-scale frame)."""
        return self.every >= 2 and index % self.every != 0 and index > sweep.busy_until

    def use(self, index: int, detections: list[FrameDetections], sweep: SmallFaceSweep) -> bool:
        """Whether ``index`` may be detected at half scale, judged from the frames detected so far."""
        every = self.every
        if not self.candidate(index, sweep) or len(detections) < every:
            return False
        return not any(crowded(det, self.cfg.threshold, QUIET_FACE * self.cfg.min_face) for det in detections[-every:])

    def image(self, image: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
        """``image`` at half size, and the scale from the source to it."""
        h, w = image.shape[:2]
        half = cv2.resize(image, (max(1, w // 2), max(1, h // 2)), interpolation=cv2.INTER_AREA)
        self.frames += 1
        return half, scale * (w // 2) / w


def track_detections(detections: Sequence[FrameDetections], shots: Sequence[Shot], cfg: AnalyzeConfig) -> list[RawTrack]:
    """The analyze pass's tracker call (benchmarks re-run it to get the raw boxes of the same tracks)."""
    return track_video(detections, shots, cfg.track, cfg.detect.threshold, WEAK_MIN_FACE * cfg.detect.min_face)


def analyze(
    video: str | os.PathLike[str],
    config: AnalyzeConfig | None = None,
    progress: ProgressSink | None = None,
    detector: FaceDetector | None = None,
) -> Plan:
    """Detect faces and shots in every frame and build the plan."""
    cfg = config or AnalyzeConfig()
    progress = progress or NullProgress()
    info = probe(video)
    scale = cfg.detect.detection_scale(info.width, info.height)
    detector = detector or create_detector(cfg.detect)
    shots = ShotDetector(replace(cfg.shots, enabled=cfg.shots.enabled and not cfg.shots.cut_list), info.avg_rate)
    low = cfg.detect.threshold * cfg.track.detect_factor  # what the tracker can use, nothing lower
    sampler = None
    if cfg.identity.enabled:
        from .embed import FaceEmbedder

        # the recognizer runs where the detector runs (--backend/--device)
        embedder = FaceEmbedder(device=cfg.detect.device, recognizer=cfg.identity.recognizer, backend=cfg.detect.backend)
        sampler = DescriptorSampler(cfg.identity, embedder)
    batch_size = cfg.detect.batch_size or (2 if detector.provider == "CPUExecutionProvider" else 16)
    detections: list[FrameDetections] = []
    batch_imgs: list = []  # frames at the analysis scale (descriptors are cut from these)
    batch_det: list = []  # what the detector sees: the same, or half of it on coarse frames
    batch_idx: list[int] = []
    batch_scale = scale  # of the frames in batch_det (flush reads it)
    total = info.frame_count

    def flush() -> None:
        if batch_idx:
            found = [sweep.merge(d) for d in detector.detect(batch_det, batch_idx, batch_scale, low)]
            if sampler is not None:
                for img, det in zip(batch_imgs, found):
                    sampler.add(img, det, scale, cfg.detect.threshold)
            detections.extend(found)
            batch_imgs.clear()
            batch_det.clear()
            batch_idx.clear()

    sweep = SmallFaceSweep(detector, cfg.detect, low, info.avg_rate)
    coarse = CoarsePass(cfg.detect, detector.provider)
    reader = VideoReader(video, scale=scale, full_every=cfg.detect.sweep_every if scale < 1.0 else 0)
    for frame in reader.frames():
        shots.push(frame.index, frame.image)
        if frame.full is not None:
            flush()  # the sweep reads the busy-scene state of the frames before this one
            sweep.run(frame, detections)
        det_img, det_scale = frame.image, scale
        if batch_det and batch_scale == scale and coarse.candidate(frame.index, sweep):
            flush()  # judge the scene with the latest normal-scale frames detected
        if coarse.use(frame.index, detections, sweep):
            det_img, det_scale = coarse.image(frame.image, scale)
        if batch_det and (batch_det[0].shape != det_img.shape or batch_scale != det_scale):
            flush()  # coarse/normal switch or resolution change mid-stream: batches must be uniform
        batch_scale = det_scale
        batch_imgs.append(frame.image)
        batch_det.append(det_img)
        batch_idx.append(frame.index)
        if len(batch_idx) >= batch_size:
            flush()
        progress.update("analyze", frame.index + 1, max(total, frame.index + 1))
    flush()
    n = reader.frames_decoded
    log.info("detection: %d of %d frames at half scale (quiet scenes), %d swept at full resolution", coarse.frames, n, sweep.frames)
    if n == 0:
        raise InputError(f"{video}: no frame could be decoded; re-export the video")
    if cfg.shots.cut_list:
        shot_list = load_cut_list(cfg.shots.cut_list, info.avg_rate, n)
    else:
        shot_list = shots.finish(n)
    raw = track_detections(detections, shot_list, cfg)
    tracks = complete_tracks(raw, shot_list, cfg.track, Scene(info.width, info.height, float(info.avg_rate)))
    if sampler is not None:
        raw_by_id = {r.track_id: r for r in raw}
        tracks = [with_descriptor(t, sampler, raw_by_id[t.track_id]) for t in tracks]
        identities = build_identities(tracks, cfg.identity.link_threshold, linkage=cfg.identity.linkage)
    else:
        identities = identities_from_tracks(tracks)
    info = replace(info, frame_count=n)
    progress.update("analyze", n, n)
    return Plan(
        video=info,
        shots=tuple(shot_list),
        detections=tuple(detections),
        tracks=tuple(tracks),
        identities=tuple(identities),
        # what a default render leaves out of this source (io.metadata): the plan records it
        config={**cfg.to_dict(), "detection_scale": scale, "provider": detector.provider, "metadata_removed": removed_by_default(video)},
        generator=f"deid-edit {__version__}",
    )


def with_descriptor(track: Track, sampler: DescriptorSampler, raw: RawTrack) -> Track:
    """``track`` with the mean descriptor of its best sampled detections."""
    embedding, n = sampler.track_embedding(raw.frames, raw.det_indices)
    return replace(track, embedding=embedding, embed_samples=n)


def check_output(video: Path, output: Path, force: bool) -> Path:
    """Refuse outputs that would lose data: the input itself, or an existing file without --force."""
    if output.exists() and output.is_dir():
        raise EncodeError(f"{output}: is a directory; give an output file name such as {output / (video.stem + '.anon' + video.suffix)}")
    if video.exists() and output.exists() and os.path.samefile(video, output):
        raise InputError(f"{output}: is the input itself; choose another output path (the input is never overwritten)")
    if output.resolve() == video.resolve():
        raise InputError(f"{output}: is the input itself; choose another output path (the input is never overwritten)")
    if output.exists() and not force:
        raise EncodeError(f"{output}: already exists; use --force to overwrite it or choose another name")
    parent = output.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EncodeError(f"{output}: cannot create folder {parent} ({exc.strerror}); choose a writable location") from exc
    if not os.access(parent, os.W_OK):
        raise EncodeError(f"{output}: folder {parent} is not writable; choose a writable location")
    return output


def selection_references(selection: Selection | None, recognizer: str = "fast") -> np.ndarray | None:
    """Descriptors of the --keep/--only photos (an unusable photo fails here, before any analysis),
    made by ``recognizer``: the one that made the plan's track descriptors."""
    photos = (selection.keep_photos or selection.only_photos) if selection else ()
    return reference_descriptors(photos, recognizer=recognizer) if photos else None


SelectionHook = Callable[[Plan, SelectionReport], None]


def apply_selection(
    plan: Plan,
    selection: Selection | None,
    cfg: IdentityConfig | None = None,
    refs: np.ndarray | None = None,
    on_selection: SelectionHook | None = None,
) -> tuple[Plan, SelectionReport | None]:
    """The plan with --keep/--only (photos or ids) decided per track, failing closed
    (``identities.select``); ``on_selection`` hears what stays visible."""
    if not selection:
        return plan, None
    cfg = cfg or IdentityConfig()
    if refs is None:
        refs = selection_references(selection, plan.recognizer)
    identities, report = select(plan.identities, plan.tracks, selection, cfg, refs)
    photos = selection.keep_photos or selection.only_photos
    for p in report.unmatched_photos:
        log.warning(
            "%s: matches no face in the video (closest %.2f, a match needs < %.2f)%s",
            photos[p],
            report.closest[p],
            cfg.keep_threshold if selection.keep_photos else cfg.only_threshold,
            "; nobody is kept by it" if selection.keep_photos else "",
        )
    log.info("kept tracks %s of identities %s", report.kept_tracks(), report.kept)
    plan = replace(plan, identities=tuple(identities))
    if on_selection is not None:
        on_selection(plan, report)
    return plan, report


def reusable_plan(video: Path, path: str | os.PathLike[str], cfg: AnalyzeConfig) -> Plan | None:
    """The saved plan at ``path`` when it was made for ``video`` (size and fingerprint) with the
    same detection, shot, tracking and identity settings; None otherwise (analyze again)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        plan = load_plan(path)
        plan.check_video(probe(video))
    except DeidError as exc:
        log.info("%s: not reused (%s)", path, exc)
        return None
    wanted = json.loads(json.dumps(cfg.to_dict()))  # as stored: tuples are lists
    if any(plan.config[k] != wanted[k] for k in ("detect", "shots", "track", "identity")):
        log.info("%s: made with other analysis settings; analyzing again", path)
        return None
    log.info("%s: reusing this plan (same file, same settings)", path)
    return plan


def render(
    video: str | os.PathLike[str],
    plan: Plan | str | os.PathLike[str],
    output: str | os.PathLike[str],
    render_cfg: RenderConfig | None = None,
    encode_cfg: EncodeConfig | None = None,
    progress: ProgressSink | None = None,
    selection: Selection | None = None,
    encode_thread: bool = True,
    on_selection: SelectionHook | None = None,
) -> Path:
    """Anonymize ``video`` following ``plan`` into ``output`` (atomic; input untouched).

    ``encode_thread`` encodes on a background thread (``ThreadedWriter``) so colour conversion,
    encoding and muxing overlap the anonymizing of the next frames; False encodes inline, the
    fallback and the reference the tests compare it with (both write the same file).
    """
    rcfg = render_cfg or RenderConfig()
    ecfg = encode_cfg or EncodeConfig()
    progress = progress or NullProgress()
    video, output = Path(video), Path(output)
    if not isinstance(plan, Plan):
        plan = load_plan(plan)
    check_output(video, output, ecfg.force)
    plan, _ = apply_selection(plan, selection, on_selection=on_selection)
    info = probe(video)
    plan.check_video(info)
    anonymizer = get_anonymizer(rcfg.mode)
    k = upright_k(info.rotation)
    total = plan.frame_count
    source = open_input(video)
    try:
        writer = open_writer(output, source, info, ecfg, threaded=encode_thread)
    except av.FFmpegError as exc:
        source.close()
        raise EncodeError(f"{output}: cannot set up the encoder ({exc}); try another --codec or container") from exc
    except BaseException:
        source.close()
        raise
    reader = VideoReader(video, copy_streams=writer.copied_streams, expected_frames=total)
    try:
        for item in reader.items():
            if isinstance(item, av.Packet):
                writer.copy(item)
                continue
            index, frame = item
            if index >= total:
                raise PlanError(
                    f"{video}: has more frames than the plan covers ({total}); re-run 'deid-edit analyze' (nothing was written)"
                )
            regions = plan.regions_at(index, include_kept=not anonymizer.hides_faces)
            coded = to_coded(regions, k, info.coded_width, info.coded_height)
            # frames and arrays are handed to the writer (maybe its thread) after their last change here
            if regions and anonymizer.hides_faces and not anonymizer.full_frame and apply_yuv420(frame, coded, anonymizer, rcfg):
                writer.write_frame(frame)  # only the regions were converted and changed
            elif regions or anonymizer.full_frame:
                rgb = frame.to_ndarray(format="rgb24")
                anonymizer.apply(rgb, coded, rcfg)
                writer.write_array(rgb, frame.pts, frame.time_base, like=frame)
            else:
                writer.write_frame(frame)
            progress.update("render", index + 1, total)
        if reader.frames_decoded != total:
            raise PlanError(f"{video}: decoded {reader.frames_decoded} frames but the plan covers {total}; re-run 'deid-edit analyze'")
        result = writer.finish()
    except BaseException:
        reader.close()
        writer.abort()
        raise
    finally:
        source.close()
    stats = getattr(anonymizer, "stats", None)  # cloak: faces cloaked, and blurred instead (too small, still recognizable)
    if stats is not None:
        log.log(logging.WARNING if stats.blurred else logging.INFO, "%s", stats.summary())
    return result


def run(
    video: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    analyze_cfg: AnalyzeConfig | None = None,
    render_cfg: RenderConfig | None = None,
    encode_cfg: EncodeConfig | None = None,
    progress: ProgressSink | None = None,
    plan_out: str | os.PathLike[str] | None = None,
    detector: FaceDetector | None = None,
    selection: Selection | None = None,
    on_selection: SelectionHook | None = None,
    reuse_plan: str | os.PathLike[str] | None = None,
) -> tuple[Path, Plan]:
    """Analyze then render; returns the output path and the plan used.

    ``reuse_plan``: a plan file (e.g. the one ``deid-edit faces`` saved) used instead of a second
    analysis when it was made for this very file with the same analysis settings."""
    video = Path(video)
    out = Path(output) if output else default_output(video)
    ecfg = encode_cfg or EncodeConfig()
    check_output(video, out, ecfg.force)  # fail before the long analysis
    check_codec(ecfg)  # an unknown encoder, or a hardware one without its driver, too
    model_file = getattr(get_anonymizer((render_cfg or RenderConfig()).mode), "model_file", None)
    if model_file is not None:
        model_file(render_cfg)  # and an anonymizer whose model is missing (cloak)
    acfg = analyze_cfg or AnalyzeConfig()
    refs = selection_references(selection, acfg.identity.recognizer)  # bad photos fail before the long analysis
    plan = reusable_plan(video, reuse_plan, acfg) if reuse_plan else None
    if plan is not None:  # the analysis is reused, never earlier choices: 'run' keeps only whom its flags name
        plan = replace(plan, identities=tuple(replace(i, action="anonymize") for i in plan.identities))
    if selection and (selection.keep_ids or selection.only_ids):
        if plan is None:  # ids of an analysis nobody has seen mean nothing
            raise InputError(
                f"{video}: --keep-identity/--only-identity name identities of a saved plan, and there is no plan "
                f"made for this file with these settings; run 'deid-edit faces {video}' first and choose from its sheet"
            )
        select(plan.identities, plan.tracks, replace(selection, keep_photos=(), only_photos=()), acfg.identity)  # unknown ids fail now
    if plan is None:
        plan = analyze(video, analyze_cfg, progress, detector)
    plan, _ = apply_selection(plan, selection, acfg.identity, refs, on_selection)
    if plan_out:
        save_plan(plan, plan_out)
    return render(video, plan, out, render_cfg, ecfg, progress), plan
