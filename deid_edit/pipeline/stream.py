"""Streaming run: one decode feeds the analysis and the render; memory is bounded by a lookahead.

Input: a video, the stage configs, ``--keep`` photos (optional) and ``--lookahead`` seconds. Output:
the anonymized video and the plan of the whole video (what ``analyze`` would have made). Frames wait
in a window until their shot has ended (a settled cut, ``ShotDetector.settled``) and are then
rendered from the shot's finished tracks: the same tracks, regions and decisions as the two-pass
path. A shot longer than the lookahead is rendered ahead of its cut from the tracks so far
(``Tracker.so_far``), always fail closed. ``--keep`` decides per track from what has been seen up to
then; identities across cuts are linked only for the plan at the end.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

from ..config import DEFAULT_LOOKAHEAD, AnalyzeConfig, DetectConfig, EncodeConfig, RenderConfig
from ..detect import FaceDetector, create_detector
from ..errors import EncodeError, InputError
from ..identities import (
    Selection,
    SelectionReport,
    TrackChoice,
    identities_from_tracks,
    select,
    split_identities,
)
from ..io.alloc import release_free_memory
from ..io.decode import VideoReader, probe, upright_k
from ..io.threaded import ThreadedWriter
from ..plan import Plan
from ..progress import NullProgress, ProgressSink
from ..render import get_anonymizer
from ..track import Tracker
from ..types import FaceRegion, Identity, Shot, Track, VideoInfo
from .analyze import WEAK_MIN_FACE, FrameAnalysis
from .render import log_anonymizer_stats, open_output, render_frame
from .selection import SelectionHook

if TYPE_CHECKING:
    from ..io.encode import VideoWriter

log = logging.getLogger(__name__)

# decoded frames waiting in the window never hold more than this: at 1080p about 110 frames, which
# keeps a run under 1.5 GB (models, encoder and decoder hold about 1 GB besides)
WINDOW_BYTES = 448 << 20
FRAME_OVERHEAD = 1.35  # a held decoded frame costs this much more than its pixels (measured at 1080p: 4.1 MB)
MIN_WINDOW = 8  # frames
TRIM_EVERY = 150  # frames between two returns of the allocator's free memory to the system
# From this many cores on, a frame's regions are drawn on the encode thread, beside the analysis of
# the next frames (the main thread's serial work is what bounds a GPU run). On 2 cores the CPU is
# already full and it cost 1-3% (sofa 1080p, 3 alternating runs: 22.4-23.1 s against 22.1-22.4 s).
DRAW_BESIDE_MIN_CPUS = 4


def beside_encoder(cfg: DetectConfig) -> DetectConfig:
    """The detector's settings for a run that encodes while it detects: with ``--threads 0`` ONNX
    Runtime gets half the cores (at least one), the decoder and the encoder the rest. All of them
    cost a fifth more CPU per frame at two threads than at one (1080p sofa, 2 cores: 53 against
    41 ms at 480x270), CPU the encoder needs; the detections are bit-identical."""
    if cfg.threads or cfg.device not in ("auto", "cpu"):
        return cfg
    return replace(cfg, threads=max(1, (os.cpu_count() or 2) // 2))


def window_frames(info: VideoInfo, lookahead: float) -> int:
    """Frames the window may hold: ``lookahead`` seconds, within ``WINDOW_BYTES`` of decoded pictures."""
    depth = 2 if any(tag in info.pix_fmt for tag in ("10", "12", "16")) else 1
    chroma = 3.0 if "444" in info.pix_fmt or "rgb" in info.pix_fmt else (2.0 if "422" in info.pix_fmt else 1.5)
    frame_bytes = max(1, int(info.coded_width * info.coded_height * chroma * depth * FRAME_OVERHEAD))
    wanted = int(round(lookahead * float(info.avg_rate or 25)))
    return max(MIN_WINDOW, min(wanted, WINDOW_BYTES // frame_bytes))


@dataclass
class StreamStats:
    """What the streaming run did, for the log and the benchmarks."""

    frames: int = 0
    settled: int = 0  # rendered after their shot ended: the two-pass plan's regions
    ahead: int = 0  # rendered before their shot ended (shot longer than the window)
    forced: int = 0  # rendered while the cut detector was undecided (a long fade)
    peak_window: int = 0
    visible: dict[int, int] = field(default_factory=dict)  # track id -> frames rendered with it visible

    def summary(self) -> str:
        return (
            f"streaming: {self.frames} frames, {self.settled} after their shot ended, {self.ahead} ahead of the cut "
            f"(shot longer than the window), {self.forced} while a fade was undecided; window peak {self.peak_window} frames"
        )


@dataclass
class RenderedRegions:
    """The regions each frame was rendered with, read like a plan (``regions_at``): what the leak
    measures score when the streaming render differs from the whole-video plan."""

    video: VideoInfo | None = None
    frames: dict[int, list[FaceRegion]] = field(default_factory=dict)

    @property
    def frame_count(self) -> int:
        return len(self.frames)

    def regions_at(self, frame_index: int, include_kept: bool = False) -> list[FaceRegion]:
        return list(self.frames.get(frame_index, ()))


class StreamRun:
    """The state of one streaming run (see the module docstring); ``run_streaming`` drives it."""

    def __init__(
        self,
        video: Path,
        info: VideoInfo,
        cfg: AnalyzeConfig,
        detector: FaceDetector | None,
        selection: Selection | None,
        refs: np.ndarray | None,
        lookahead: float,
        embedder: object = None,
    ) -> None:
        self.video, self.info, self.cfg = video, info, cfg
        self.fa = FrameAnalysis(info, cfg, detector, embedder)
        self.tracker = Tracker(cfg.track, cfg.detect.threshold, WEAK_MIN_FACE * cfg.detect.min_face)
        self.tracker.begin(0)
        self.window = window_frames(info, lookahead)
        # how far back a track's observations still shape a box: gap filling, smoothing, held ends
        t = cfg.track
        self.reach = int(t.max_gap + 4 * t.smooth_sigma + float(info.avg_rate or 25) * max(t.hold_cut, t.bridge, t.hold_edge)) + 8
        self.cut_list: list[int] | None = None
        if cfg.shots.cut_list:  # an editor's cut list: every shot is known before the first frame
            self.cut_list = [s.start for s in self.fa.shot_list(max(info.frame_count, 1))][1:]
        self.selection = selection if selection else None
        self.refs = refs
        self.shot_index, self.shot_start, self.tracked = 0, 0, 0
        self.shots: list[Shot] = []
        self.tracks: list[Track] = []  # finished tracks of the shots that ended
        self.prev: tuple[Shot | None, list[Track]] = (None, [])  # the last ended shot (regions carried over its cut)
        self.choices: dict[int, TrackChoice] = {}
        self.kept: set[int] = set()
        self.ended: deque[tuple[Shot, Plan]] = deque()  # shots that ended, with their regions, until rendered
        self.pushed = 0  # frames handed to the analysis
        self.current: Plan | None = None  # regions of the frames of the open shot (``None``: none yet)
        self.current_until = -1  # the open-shot plan was made with the tracks up to this frame
        self.stats = StreamStats()
        self.config = {**cfg.to_dict(), "detection_scale": self.fa.scale, "provider": self.fa.detector.provider}

    # -- shots and tracks -----------------------------------------------------------------------
    def _cuts(self) -> set[int]:
        return set(self.cut_list if self.cut_list is not None else self.fa.shots.merged())

    def _settled(self) -> int:
        return min(len(self.fa.detections), self.fa.shots.settled())  # a cut list disables the detector: all settled

    def advance(self, limit: int | None = None, cuts: set[int] | None = None) -> None:
        """Track every frame whose shot is settled (or up to ``limit`` with ``cuts``, at the end)."""
        limit = self._settled() if limit is None else limit
        cuts = self._cuts() if cuts is None else cuts
        while self.tracked < limit:
            f = self.tracked
            if f in cuts and f > self.shot_start:
                self.end_shot(f)
            self.tracker.step(f, self.fa.detections[f])
            self.tracked += 1

    def prune(self, first_waiting: int | None) -> None:
        """In a long open shot, drop the descriptor samples no track can use any more: before the
        reach of the first frame still waiting (an ahead plan's tracks start there), all but each
        track's best. Memory stays flat through an hour-long take."""
        before = (self.tracked if first_waiting is None else min(self.tracked, first_waiting)) - self.reach
        if self.fa.sampler is None or before <= self.shot_start:
            return
        open_tracks = [*self.tracker.done, *self.tracker.active]
        self.fa.sampler.prune(before, [(t.frames, t.det_indices) for t in open_tracks])

    def end_shot(self, end: int) -> None:
        """The open shot ended at ``end``: its tracks are final, and so are the decisions on them."""
        shot = Shot(self.shot_index, self.shot_start, end)
        raw = self.tracker.end()
        tracks = self.fa.tracks(raw, [shot])
        if self.fa.sampler is not None:
            self.fa.sampler.forget_before(end)  # in the tracks' embeddings now; memory stays flat
        self._decide(tracks)
        self.ended.append((shot, self._plan(shot, tracks)))
        self.shots.append(shot)
        self.tracks.extend(tracks)
        self.prev = (shot, tracks)
        self.shot_index += 1
        self.shot_start = end
        self.tracker.begin(self.shot_index)
        self.current, self.current_until = None, -1

    def _decide(self, tracks: Sequence[Track]) -> None:
        """--keep per track, with every track seen so far as context (never what comes later)."""
        if self.selection is None or not tracks:
            return
        context = [*self.tracks, *tracks]
        _, report = select(identities_from_tracks(context), context, self.selection, self.cfg.identity, self.refs)
        mine = {t.track_id for t in tracks}
        for c in report.choices:
            if c.track_id in mine:
                self.choices[c.track_id] = c
                (self.kept.add if c.kept else self.kept.discard)(c.track_id)

    def _plan(self, shot: Shot, tracks: Sequence[Track]) -> Plan:
        """The regions of ``shot`` (and what the shot before carries over its cut) as a plan."""
        prev_shot, prev_tracks = self.prev
        shots = (prev_shot, shot) if prev_shot is not None else (shot,)
        every = [*prev_tracks, *tracks]
        idents = tuple(Identity(t.track_id, (t.track_id,), "keep" if t.track_id in self.kept else "anonymize") for t in every)
        return Plan(video=self.info, shots=shots, detections=(), tracks=tuple(every), identities=idents, config=self.config)

    def ahead_plan(self, end: int, first: int) -> Plan:
        """Regions for frames of the open shot from ``first`` on, before its cut: the tracks so far,
        as if the shot ended at ``end``. Observations far before ``first`` are left out (the cost
        stays bounded in a long shot); they cannot change a box from ``first`` on."""
        since = max(self.shot_start, first - self.reach)
        shot = Shot(self.shot_index, self.shot_start, end)
        raw = self.tracker.so_far(since)
        tracks = self.fa.tracks(raw, [shot]) if raw else []
        self._decide(tracks)
        return self._plan(shot, tracks)

    def undecided_plan(self, index: int) -> Plan:
        """Regions for frame ``index`` beyond the tracked frames (the cut detector is undecided, or
        live video is due): the tracks so far, held to this frame, and the frame's own detections."""
        base = self.ahead_plan(max(self.tracked, index + 1), index)
        return replace(base, tracks=(*base.tracks, *self.detections_at(index)))

    def detections_at(self, f: int) -> list[Track]:
        """Frame ``f``'s own detections as one-frame tracks (for frames beyond the tracked ones)."""
        if f >= len(self.fa.detections):
            return []
        det = self.fa.detections[f]
        sure = det.scores >= self.fa.low
        out = []
        for k in np.flatnonzero(sure):
            lm = None if det.landmarks is None else det.landmarks[k : k + 1].astype(np.float32)
            out.append(
                Track(
                    track_id=-1 - int(k),
                    shot_index=self.shot_index,
                    frames=np.array([f], np.int64),
                    boxes=det.boxes[k : k + 1].astype(np.float32),
                    scores=det.scores[k : k + 1].astype(np.float32),
                    landmarks=lm,
                    observed=np.array([True]),
                    margin=np.array([self.cfg.track.max_margin], np.float32),
                )
            )
        return out


def run_streaming(
    video: str | os.PathLike[str],
    output: str | os.PathLike[str],
    analyze_cfg: AnalyzeConfig | None = None,
    render_cfg: RenderConfig | None = None,
    encode_cfg: EncodeConfig | None = None,
    progress: ProgressSink | None = None,
    detector: FaceDetector | None = None,
    selection: Selection | None = None,
    refs: np.ndarray | None = None,
    on_selection: SelectionHook | None = None,
    lookahead: float = DEFAULT_LOOKAHEAD,
    record: RenderedRegions | None = None,
) -> tuple[Path, Plan]:
    """Analyze and render in one decode; returns the output and the plan of the whole video.

    The caller has checked the output path, the encoder and the photos (``pipeline.run``).
    ``record`` collects the regions each frame was rendered with (tests, benchmarks)."""
    acfg, rcfg, ecfg = analyze_cfg or AnalyzeConfig(), render_cfg or RenderConfig(), encode_cfg or EncodeConfig()
    progress = progress or NullProgress()
    video, output = Path(video), Path(output)
    info = probe(video)
    state = StreamRun(video, info, acfg, detector or create_detector(beside_encoder(acfg.detect)), selection, refs, lookahead)
    if record is not None:
        record.video = info
    anonymizer = get_anonymizer(rcfg.mode)
    k = upright_k(info.rotation)
    include_kept = not anonymizer.hides_faces
    total = info.frame_count
    source, writer = open_output(video, output, info, ecfg, threaded=True)
    reader = VideoReader(video, scale=state.fa.scale, full_every=state.fa.full_every, copy_streams=writer.copied_streams)
    reader.close_at_end = False  # packets waiting in the window still refer to its streams
    pending: deque[tuple[int, av.VideoFrame] | av.Packet] = deque()
    waiting = 0  # frames in ``pending``
    stats = state.stats
    written = 0

    beside = isinstance(writer, ThreadedWriter) and (os.cpu_count() or 1) >= DRAW_BESIDE_MIN_CPUS

    def draw(w: VideoWriter | ThreadedWriter, frame: av.VideoFrame, regions: list[FaceRegion]) -> None:
        render_frame(frame, regions, anonymizer, w, rcfg, k, info)

    def emit(plan: Plan | None, upto: int, kind: str) -> None:
        """Render the waiting frames before ``upto`` (and the packets between them) with ``plan``."""
        nonlocal waiting, written
        while pending:
            item = pending[0]
            if isinstance(item, av.Packet):
                writer.copy(pending.popleft())
                continue
            index, frame = item
            if index >= upto:
                return
            pending.popleft()
            waiting -= 1
            p = plan
            if p is None:
                p = state.undecided_plan(index)
            regions = p.regions_at(index, include_kept=include_kept)
            if state.kept:
                for r in p.regions_at(index, include_kept=True):
                    if r.track_id in state.kept:
                        stats.visible[r.track_id] = stats.visible.get(r.track_id, 0) + 1
            if beside:
                writer.call(draw, frame, regions)  # on the encode thread
            else:
                draw(writer, frame, regions)
            if record is not None:
                record.frames[index] = regions
            setattr(stats, kind, getattr(stats, kind) + 1)
            written += 1
            progress.update("render", written, max(total, written))

    def pending_first() -> int | None:
        return next((item[0] for item in pending if not isinstance(item, av.Packet)), None)

    def emit_ended() -> None:
        """Frames of the shots that ended, each with its own finished tracks."""
        while state.ended:
            shot, plan = state.ended[0]
            emit(plan, shot.end, "settled")
            first = pending_first()
            if first is not None and first < shot.end:
                return  # (cannot happen: emit renders every frame before the shot's end)
            state.ended.popleft()

    def drain() -> None:
        """Render what is ready: frames of ended shots; past the window, frames ahead of their cut."""
        state.advance()
        emit_ended()
        first = pending_first()
        if first is None or first > state.pushed - state.window:
            return
        if first < state.tracked:
            # one frame out per frame in, so the encoder is fed evenly; the plan of the tracks so
            # far is remade once a quarter of the window has passed (it must see that far ahead)
            if state.current is None or state.current_until - first < state.window // 2:
                state.current, state.current_until = state.ahead_plan(state.tracked, first), state.tracked
            emit(state.current, min(state.pushed - state.window + 1, state.current_until), "ahead")
        else:
            emit(None, first + 1, "forced")

    try:
        for item in reader.analyzed_items():
            if isinstance(item, av.Packet):
                pending.append(item)
                continue
            index, frame, small = item
            state.fa.push(small)
            state.pushed = index + 1
            pending.append((index, frame))
            waiting += 1
            stats.peak_window = max(stats.peak_window, waiting)
            progress.update("analyze", index + 1, max(total, index + 1))
            drain()
            if index % TRIM_EVERY == TRIM_EVERY - 1:
                state.prune(pending_first())
                release_free_memory()
        state.fa.flush()
        n = reader.frames_decoded
        if n == 0:
            raise InputError(f"{video}: no frame could be decoded; re-export the video")
        state.fa.log_passes(n)
        shot_list = state.fa.shot_list(n)
        done = [s for s in shot_list if s.end <= state.shot_start]
        if [(s.start, s.end) for s in done] != [(s.start, s.end) for s in state.shots]:
            log.warning("%s: the cuts found at the end differ from those the stream settled on; the plan keeps the stream's", video)
        cuts = {s.start for s in shot_list if s.start >= state.shot_start}
        state.advance(limit=n, cuts=cuts)
        state.end_shot(n)
        emit_ended()
        for item in list(pending):
            writer.copy(item)  # type: ignore[arg-type]
        pending.clear()
        stats.frames = written
        if written != n:
            raise EncodeError(f"{video}: {n} frames decoded but {written} written; nothing was kept")
        result = writer.finish()
    except BaseException:
        writer.abort()
        raise
    finally:
        reader.close()
        source.close()
    progress.update("analyze", n, n)
    log.info("%s", stats.summary())
    log_anonymizer_stats(anonymizer)
    plan = finish_plan(state, video, on_selection)
    return result, plan


def finish_plan(state: StreamRun, video: Path, on_selection: SelectionHook | None) -> Plan:
    """The plan of the whole video: the stream's shots and tracks, identities linked across cuts,
    and as kept the tracks that were rendered visible in any frame."""
    tracks = state.tracks
    identities = state.fa.identities(tracks)
    plan = state.fa.plan(video, state.shots, tracks, identities)
    if state.selection is None:
        return plan
    index = {t.track_id: i for i, t in enumerate(tracks)}
    shown = {tid for tid, n in state.stats.visible.items() if n > 0}
    keep = {index[t]: state.choices[t].reason if t in state.choices else "kept" for t in shown if t in index}
    idents, kept_ids, anon_ids = split_identities(identities, tracks, keep)
    ident_of = {t: i.identity_id for i in identities for t in i.track_ids}
    choices = tuple(
        replace(
            state.choices.get(t.track_id, TrackChoice(t.track_id, -1, False, "not chosen")),
            identity_id=ident_of.get(t.track_id, -1),
            kept=t.track_id in shown,
        )
        for t in tracks
    )
    unmatched: tuple[int, ...] = ()
    closest: tuple[float, ...] = ()
    if state.refs is not None and len(state.refs):
        embs = [t.embedding for t in tracks if t.embedding is not None]
        if embs:
            d = np.linalg.norm(state.refs[:, None, :] - np.stack(embs)[None], axis=2)
            closest = tuple(float(v) for v in d.min(axis=1))
        else:
            closest = tuple(float("inf") for _ in state.refs)
        matched = {c.photo for c in choices if c.kept and c.photo >= 0}
        unmatched = tuple(p for p in range(len(state.refs)) if p not in matched)
    report = SelectionReport(tuple(kept_ids), tuple(anon_ids), (), choices, unmatched, closest)
    plan = replace(plan, identities=tuple(idents))
    if on_selection is not None:
        on_selection(plan, report)
    return plan
