"""Who was found: a plan in; per-identity summaries, a printable table and a contact sheet out.

Input: a ``Plan`` and, for the pictures, the video it was made from (given explicitly: a moved plan
may name a stale path). Output: one ``IdentitySummary`` per identity (screen time, shots, tracks, first
appearance, best frames), ``format_table``, and ``write_contact_sheet`` (``contact_sheet.png`` plus
``identity_<N>.png``). Next: the editor chooses who is kept, then render. Best frames come from the
plan alone (score, frontality, size, share inside the frame), so the pictures cost one decode that
stops at the last chosen frame; nothing here detects, so the sheet shows exactly what render acts on.
"""

from __future__ import annotations

import logging
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from .errors import ConfigError, EncodeError
from .identities import SelectionReport, frontality
from .io.atomic import write_atomic
from .io.decode import VideoReader
from .plan import Plan, region_top
from .progress import NullProgress, ProgressSink
from .timefmt import clock, timecode
from .types import Track, VideoInfo

log = logging.getLogger(__name__)

UNASSIGNED = -1  # identity_id of the summary gathering tracks no identity claims (render anonymizes them)
BEST_PER_IDENTITY = 12  # one thumbnail per track: a wrong link shows as a stranger in the strip
THUMB_MARGIN = 0.4  # crop side = box side * (1 + margin): hair, ears and chin help people recognise a face
LARGE_THUMB = 224  # identity_<N>.png side: big enough to recognise someone, small enough for plugin UIs
ROWS_PER_PAGE = 200  # 200 rows of 124 px stay under the 32k-pixel height many image viewers accept
DARK_BELOW, BRIGHT_TARGET, MAX_GAIN = 140.0, 200.0, 4.0  # crops whose 99th luma percentile is below are brightened

# BGR, as cv2 writes them
KEEP_COLOR = (80, 200, 60)
ANON_COLOR = (60, 60, 230)
SHEET_BG = (32, 32, 32)
TEXT = (235, 235, 235)
DIM_TEXT = (170, 170, 170)
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class IdentitySummary:
    """What an editor needs to decide about one person, computed from the plan.

    ``frames`` counts distinct frames in which any of the identity's tracks is present, observed or
    interpolated (both are anonymized, so both are screen time). ``first_timecode`` is
    ``HH:MM:SS:FF`` counted in the rounded nominal rate (what an NLE shows for frame
    ``first_frame`` of a file starting at 00:00:00:00); ``first_clock`` is ``HH:MM:SS.mmm`` of real
    time. ``best_frames`` are the frames whose crops show the face best, best first.
    """

    identity_id: int
    label: str
    action: str
    tracks: int
    shots: int
    frames: int
    screen_time: Fraction  # seconds
    first_frame: int  # -1 when the identity has no samples
    first_timecode: str
    first_clock: str
    first_time: Fraction | None  # seconds from the first frame
    best_frames: tuple[int, ...]
    thumbnail: str | None = None
    best_score: float = 0.0  # highest detector score of any observation
    # Only weak tracks (never above --threshold): a dim face, or not a face at all. Masked either way
    # (fail closed); the editor is told so the row is not mistaken for a sure face.
    low_confidence: bool = False
    # Largest descriptor distance between two of its identifiable tracks; from ``link_threshold`` up
    # the tracks disagree (a hand-edited or older plan, or average linkage): check for a wrong link.
    spread: float = 0.0
    disagree: bool = False


# -- time -------------------------------------------------------------------------------------


def frame_duration(video: VideoInfo) -> Fraction:
    """Seconds per frame: the average rate, else duration / frames (exact for CFR, the mean for VFR)."""
    if video.avg_rate and video.avg_rate > 0:
        return 1 / Fraction(video.avg_rate)
    if video.duration and video.frame_count:
        return Fraction(video.duration) / video.frame_count
    return Fraction(1, 25)


# -- choosing the best frames from the plan ---------------------------------------------------


def _sample_terms(track: Track, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(face side in px, quality without the size term) per sample of a track.

    A face cut by the frame edge makes a poor picture of someone: the visible fraction counts
    squared. Samples that were interpolated, not detected, never qualify (their boxes are guesses).
    """
    b = np.asarray(track.boxes, np.float64)
    w = np.clip(b[:, 2] - b[:, 0], 0, None)
    h = np.clip(b[:, 3] - b[:, 1], 0, None)
    iw = np.clip(np.minimum(b[:, 2], width) - np.maximum(b[:, 0], 0), 0, None)
    ih = np.clip(np.minimum(b[:, 3], height) - np.maximum(b[:, 1], 0), 0, None)
    area = w * h
    inside = np.where(area > 0, iw * ih / np.where(area > 0, area, 1.0), 0.0)
    score = np.clip(np.asarray(track.scores, np.float64), 0.0, 1.0)
    base = score * (0.25 + 0.75 * frontality(track.landmarks, len(b))) * inside**2
    base = np.where(np.asarray(track.observed, bool), base, -np.inf)
    return np.sqrt(area), base


def choose_best(tracks: Sequence[Track], width: int, height: int, count: int) -> tuple[int, ...]:
    """Up to ``count`` frames that show the identity well: the best first, the others in time order.

    Quality = detector score x frontality x visible fraction² x size (relative to the identity's
    largest face). First every shot gets its best frame, then every other track, then the best
    remaining frames at least ``observed samples / (count + 1)`` frames from any chosen one (halved
    while none is left), so a row shows the person at different moments, not six copies of one.
    """
    if count <= 0 or not tracks:
        return ()
    sides, bases, frames, track_pos, shots = [], [], [], [], []
    for k, t in enumerate(tracks):
        side, base = _sample_terms(t, width, height)
        sides.append(side)
        bases.append(base)
        frames.append(np.asarray(t.frames, np.int64))
        track_pos.append(np.full(len(t.frames), k))
        shots.append(np.full(len(t.frames), t.shot_index))
    side, base = np.concatenate(sides), np.concatenate(bases)
    frame, tpos, shot = np.concatenate(frames), np.concatenate(track_pos), np.concatenate(shots)
    valid = np.isfinite(base)
    if not valid.any():  # nothing detected (only possible in hand-made plans): show what there is
        valid[:] = True
        base = np.zeros_like(side) + 1e-6
    biggest = side[valid].max() if valid.any() else 0.0
    quality = np.where(valid, base * (0.3 + 0.7 * side / biggest if biggest > 0 else 1.0), -np.inf)
    order = np.argsort(-quality, kind="stable")
    order = order[valid[order]]
    chosen: list[int] = [int(order[0])] if len(order) else []
    for key in (shot, tpos):  # the best of each shot, then of each track not yet shown
        _, first = np.unique(key[order], return_index=True)  # first in quality order = best of each
        for i in order[np.sort(first)].tolist():
            if len(chosen) < count and key[i] not in {key[j] for j in chosen}:
                chosen.append(i)
    spacing = max(1, int(valid.sum()) // (count + 1))
    dist = np.full(len(frame), np.iinfo(np.int64).max)
    for i in chosen:
        dist = np.minimum(dist, np.abs(frame - frame[i]))
    while len(chosen) < count:  # the best frames far enough from those chosen; closer when none is left
        ok = dist[order] >= spacing
        if ok.any():
            i = int(order[np.argmax(ok)])
            chosen.append(i)
            dist = np.minimum(dist, np.abs(frame - frame[i]))
        elif spacing > 1:
            spacing //= 2
        else:
            break
    best_first = chosen[:1] + sorted(chosen[1:], key=lambda i: int(frame[i]))
    return tuple(dict.fromkeys(int(frame[i]) for i in best_first))  # overlapping tracks may share a frame


# -- summaries ---------------------------------------------------------------------------------


def track_frames(tracks: Sequence[Track], width: int, height: int, count: int) -> tuple[int, ...]:
    """One frame per track (its best face), in time order, for up to ``count`` tracks: the row is a
    strip of the identity's tracks, so a wrong link shows as a stranger in it. With more tracks
    than slots, the best-identifiable ones (most descriptor samples, then longest) are shown; a
    single track gets ``choose_best``'s spread of frames instead."""
    if len(tracks) <= 1:
        return choose_best(tracks, width, height, count)
    ranked = sorted(tracks, key=lambda t: (-t.embed_samples, -len(t.frames), t.start))[:count]
    frames = [choose_best([t], width, height, 1) for t in sorted(ranked, key=lambda t: t.start)]
    return tuple(dict.fromkeys(f[0] for f in frames if f))


def track_spread(tracks: Sequence[Track]) -> float:
    """Largest L2 distance between two identifiable tracks' descriptors (0 with fewer than two)."""
    vecs = [t.embedding for t in tracks if t.embedding is not None]
    if len(vecs) < 2:
        return 0.0
    v = np.stack(vecs)
    return float(np.linalg.norm(v[:, None] - v[None], axis=2).max())


def summarize(plan: Plan, best: int = BEST_PER_IDENTITY) -> list[IdentitySummary]:
    """One summary per identity, ordered by first appearance (then id); from the plan alone.

    Tracks that no identity claims are still anonymized by the renderer, so they are listed too,
    together, as identity ``UNASSIGNED`` (-1) rather than silently left out of what the editor sees.
    Identities that own no samples come last.
    """
    step = frame_duration(plan.video)
    limit = plan.link_threshold
    out = []
    for identity_id, label, action, ts in _groups(plan):
        spread = track_spread(ts)
        frames = np.unique(np.concatenate([np.asarray(t.frames, np.int64) for t in ts])) if ts else np.zeros(0, np.int64)
        first = int(frames[0]) if len(frames) else -1
        first_time = first * step if first >= 0 else None
        out.append(
            IdentitySummary(
                identity_id=identity_id,
                label=label,
                action=action,
                tracks=len(ts),
                shots=len({t.shot_index for t in ts}),
                frames=len(frames),
                screen_time=len(frames) * step,
                first_frame=first,
                first_timecode=timecode(first, plan.video.avg_rate or 1 / step),
                first_clock=clock(first_time),
                first_time=first_time,
                best_frames=track_frames(ts, plan.video.width, plan.video.height, best),
                best_score=max((float(t.scores[t.observed].max()) for t in ts if t.observed.any()), default=0.0),
                low_confidence=bool(ts) and all(plan.is_weak(t.track_id) for t in ts),
                spread=spread,
                disagree=spread >= limit,
            )
        )
    out.sort(key=lambda s: (s.first_frame < 0, s.first_frame, s.identity_id))
    return out


def _groups(plan: Plan) -> list[tuple[int, str, str, list[Track]]]:
    """(identity id, label, action, tracks) per identity, plus the unclaimed tracks as ``UNASSIGNED``."""
    tracks_by_id = {t.track_id: t for t in plan.tracks}
    groups = [(i.identity_id, i.label, i.action, [tracks_by_id[k] for k in i.track_ids if k in tracks_by_id]) for i in plan.identities]
    claimed = {k for i in plan.identities for k in i.track_ids}
    loose = [t for t in plan.tracks if t.track_id not in claimed]
    return groups + ([(UNASSIGNED, "(no identity)", "anonymize", loose)] if loose else [])


def format_table(summaries: Sequence[IdentitySummary]) -> str:
    """A plain-text table, one line per identity, for the terminal (``deid-edit faces``)."""
    if not summaries:
        return "no faces found"
    head = ("id", "label", "action", "screen s", "frames", "shots", "tracks", "score", "first seen", "at", "check")
    rows = [
        (
            str(s.identity_id),
            s.label,
            s.action,
            f"{float(s.screen_time):.2f}",
            str(s.frames),
            str(s.shots),
            str(s.tracks),
            f"{s.best_score:.2f}" + (" low" if s.low_confidence else ""),
            s.first_timecode,
            s.first_clock,
            f"tracks disagree ({s.spread:.2f})" if s.disagree else "",
        )
        for s in summaries
    ]
    right = {0, 3, 4, 5, 6}
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if c in right else v.ljust(w) for c, (v, w) in enumerate(zip(r, widths))).rstrip()

    return "\n".join([line(head), line(["-" * w for w in widths]), *(line(r) for r in rows)])


# -- pictures ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SheetLayout:
    """Geometry of the contact sheet, so callers and tests know its size before it is drawn."""

    per_row: int = BEST_PER_IDENTITY
    thumb: int = 112
    gap: int = 6
    border: int = 3
    header: int = 44

    def __post_init__(self) -> None:
        if not 1 <= self.per_row <= 64:
            raise ConfigError(f"--per-row {self.per_row} is not allowed; use 1..64 thumbnails per identity")
        if not 32 <= self.thumb <= 1024:
            raise ConfigError(f"--thumb {self.thumb} is not allowed; use 32..1024 pixels")

    @property
    def label_width(self) -> int:
        return max(232, 2 * self.thumb)

    @property
    def row_height(self) -> int:
        return max(self.thumb, 88) + 2 * self.gap  # six readable lines of label even beside small thumbnails

    @property
    def width(self) -> int:
        return self.label_width + self.per_row * (self.thumb + self.gap) + self.gap

    def height(self, rows: int) -> int:
        """Sheet height for ``rows`` identities (an empty sheet still has one row for its message)."""
        return self.header + max(rows, 1) * self.row_height

    def cell_origin(self, row: int, slot: int) -> tuple[int, int]:
        """(x, y) of thumbnail ``slot`` of row ``row``."""
        return self.label_width + slot * (self.thumb + self.gap), self.header + row * self.row_height + self.gap


def face_crop(image: np.ndarray, box: np.ndarray, size: int, margin: float = THUMB_MARGIN) -> np.ndarray:
    """Square crop around a face box, ``size`` pixels; parts outside the frame are black.

    The box first reaches up like the renderer's region (forehead and hair, ``plan.region_top``),
    then grows by ``margin`` and becomes a square on its centre, so faces are not stretched.
    """
    x1, _, x2, y2 = (float(v) for v in box)
    y1 = region_top(box)
    side = max(x2 - x1, y2 - y1, 2.0) * (1.0 + margin)
    s = max(2, int(round(side)))
    a = int(round((x1 + x2) / 2 - s / 2))
    b = int(round((y1 + y2) / 2 - s / 2))
    out = np.zeros((s, s, 3), np.uint8)
    h, w = image.shape[:2]
    ix0, iy0, ix1, iy1 = max(a, 0), max(b, 0), min(a + s, w), min(b + s, h)
    if ix1 > ix0 and iy1 > iy0:
        out[iy0 - b : iy1 - b, ix0 - a : ix1 - a] = image[iy0:iy1, ix0:ix1]
    interp = cv2.INTER_AREA if s > size else cv2.INTER_CUBIC
    return cv2.resize(out, (size, size), interpolation=interp)


def viewable(rgb: np.ndarray) -> np.ndarray:
    """A dark crop brightened (at most ``MAX_GAIN`` x) so the editor can tell who it is.

    Audiences in a dark hall and night shots are faces too, and the editor must decide about them;
    pixels are only scaled (colours kept), and only in the previews, never in the render.
    """
    top = float(np.percentile(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), 99))
    if top >= DARK_BELOW:
        return rgb
    return cv2.convertScaleAbs(rgb, alpha=min(MAX_GAIN, BRIGHT_TARGET / max(top, 1.0)))


def _ascii(text: str) -> str:
    """cv2's Hershey fonts draw ASCII only: drop accents, replace other characters by '?'."""
    chars = (c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in chars)


def _fit(text: str, width: int, scale: float, thickness: int = 1) -> str:
    """``text`` shortened with '...' until it fits ``width`` pixels."""
    text = _ascii(text)
    if cv2.getTextSize(text, FONT, scale, thickness)[0][0] <= width:
        return text
    while text and cv2.getTextSize(text + "...", FONT, scale, thickness)[0][0] > width:
        text = text[:-1]
    return text + "..."


def _put(
    img: np.ndarray, text: str, org: tuple[int, int], scale: float, color: tuple[int, int, int], width: int, bold: bool = False
) -> None:
    thickness = 2 if bold else 1
    cv2.putText(img, _fit(text, width, scale, thickness), org, FONT, scale, color, thickness, cv2.LINE_AA)


def _write_png(path: Path, bgr: np.ndarray) -> None:
    """Encode and write atomically (temporary file beside the target, then rename).

    ``cv2.imencode`` + Python file I/O also works for non-ASCII paths, which ``cv2.imwrite`` does not
    on Windows.
    """
    ok, buf = cv2.imencode(".png", bgr)
    if not ok:
        raise EncodeError(f"{path}: PNG encoding failed ({bgr.shape[1]}x{bgr.shape[0]}); try a smaller --thumb or --per-row")
    write_atomic(path, buf.tobytes(), EncodeError, "", "check the folder and free space")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _thumb_file(identity_id: int) -> str:
    return f"identity_{identity_id}.png" if identity_id >= 0 else "identity_unassigned.png"


def _draw_header(
    sheet: np.ndarray, layout: SheetLayout, video_name: str, plan: Plan, summaries: Sequence[IdentitySummary], page: str
) -> None:
    v = plan.video
    kept = sum(s.action == "keep" for s in summaries)
    duration = v.frame_count * frame_duration(v)
    title = f"{video_name}   {v.width}x{v.height}   {clock(duration)}   {v.frame_count} frames   {_count(len(plan.shots), 'shot')}"
    count = f"{len(summaries)} identities, {kept} kept{page}; dark faces brightened" if summaries else "no faces found"
    legend = 300 if layout.width >= 600 else 0  # the rows' action words say it too
    _put(sheet, title, (layout.gap + 4, 19), 0.5, TEXT, layout.width - legend - 16)
    _put(sheet, count, (layout.gap + 4, 37), 0.45, DIM_TEXT, layout.width - legend - 16)
    if legend:
        x = layout.width - legend
        for dx, color, word in ((0, KEEP_COLOR, "keep (shown)"), (140, ANON_COLOR, "anonymize")):
            cv2.rectangle(sheet, (x + dx, 10), (x + dx + 14, 24), color, -1)
            cv2.putText(sheet, word, (x + dx + 20, 22), FONT, 0.45, TEXT, 1, cv2.LINE_AA)


def _draw_row(sheet: np.ndarray, layout: SheetLayout, row: int, s: IdentitySummary, duration: Fraction) -> None:
    """Frame the row in its action's colour and write the label cell; thumbnails are pasted as decoded."""
    y0 = layout.header + row * layout.row_height
    color = KEEP_COLOR if s.action == "keep" else ANON_COLOR
    b = layout.border
    cv2.rectangle(sheet, (b // 2 + 1, y0 + b // 2 + 1), (layout.width - b // 2 - 2, y0 + layout.row_height - b // 2 - 2), color, b)
    name = f"id {s.identity_id}" if s.identity_id >= 0 else "no id"
    share = f" ({float(s.screen_time / duration):.0%})" if duration > 0 else ""
    lines: list[tuple[str, tuple[int, int, int], bool]] = [
        (f"{name}  {s.label}", TEXT, True),
        (s.action.upper(), color, True),
        (f"{float(s.screen_time):.1f} s on screen{share}", TEXT, False),
        (f"{_count(s.shots, 'shot')}, {_count(s.tracks, 'track')}", TEXT, False),
        (f"low score {s.best_score:.2f}: maybe no face" if s.low_confidence else f"score {s.best_score:.2f}", DIM_TEXT, False),
        (f"first {s.first_timecode}", TEXT, False),
        (f"      {s.first_clock}", DIM_TEXT, False),
    ]
    if s.disagree:
        lines.insert(2, (f"CHECK: tracks disagree ({s.spread:.2f})", ANON_COLOR, True))
    inner = layout.row_height - 2 * (b + 2)
    step = max(9, inner // len(lines))
    scale = min(0.5, step / 36.0)
    width = layout.label_width - 2 * layout.gap - 8
    for k, (text, col, bold) in enumerate(lines):
        _put(sheet, text, (layout.gap + 6, y0 + b + 2 + step * (k + 1) - max(2, step // 5)), scale, col, width, bold)
    if not s.best_frames:
        x, y = layout.cell_origin(row, 0)
        _put(sheet, "no picture (no detected sample)", (x + 4, y + layout.thumb // 2), 0.45, DIM_TEXT, layout.width - x - 12)


def _paste(sheet: np.ndarray, layout: SheetLayout, row: int, slot: int, thumb_bgr: np.ndarray, caption: str) -> None:
    x, y = layout.cell_origin(row, slot)
    cell = thumb_bgr.copy()
    if layout.thumb >= 64:  # the frame's timecode, so the editor can find the moment
        band = max(12, layout.thumb // 8)
        cell[-band:] = (cell[-band:].astype(np.uint16) * 2 // 5).astype(np.uint8)
        scale = min(0.45, band / 30.0)
        _put(cell, caption, (3, layout.thumb - band // 4 - 1), scale, TEXT, layout.thumb - 6)
    sheet[y : y + layout.thumb, x : x + layout.thumb] = cell


def write_contact_sheet(
    video: str | os.PathLike[str],
    plan: Plan,
    out_dir: str | os.PathLike[str],
    per_row: int = BEST_PER_IDENTITY,
    thumb: int = 112,
    *,
    large: int = LARGE_THUMB,
    rows_per_page: int = ROWS_PER_PAGE,
    progress: ProgressSink | None = None,
) -> tuple[Path, list[IdentitySummary]]:
    """Write ``out_dir/contact_sheet.png`` and ``out_dir/identity_<N>.png``; return the sheet and summaries.

    One sequential decode of ``video`` (checked against the plan: a different file would show the
    wrong faces) collects crops only on the chosen frames and stops after the last of them. The
    returned summaries carry the thumbnail paths and first-appearance times read from the decoded
    timestamps (exact also for variable frame rate; the plan alone knows only the average rate).
    More than ``rows_per_page`` identities (crowds) continue on ``contact_sheet_2.png`` and so on, as
    image viewers refuse PNGs much taller than 32k pixels. Existing files of these names are
    replaced: they are previews, regenerated from the plan at will.
    """
    layout = SheetLayout(per_row, thumb)
    if rows_per_page < 1 or not 32 <= large <= 2048:
        raise ConfigError(f"rows_per_page={rows_per_page}, large={large}: use 1 or more rows and 32..2048 pixels")
    progress = progress or NullProgress()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EncodeError(f"{out}: cannot create the folder ({exc.strerror}); choose another folder") from exc
    summaries = summarize(plan, best=per_row)
    reader = VideoReader(video)
    plan.check_video(reader.info)

    members = {g[0]: g[3] for g in _groups(plan)}
    wanted: dict[int, list[tuple[int, int, np.ndarray]]] = {}  # frame -> (row, slot, box)
    for row, s in enumerate(summaries):
        for slot, f in enumerate(s.best_frames):
            box = _box_at(members[s.identity_id], f)
            if box is not None:
                wanted.setdefault(f, []).append((row, slot, box))
    firsts = {s.first_frame for s in summaries if s.first_frame >= 0}
    last = max([*wanted, *firsts], default=-1)
    sheets = [
        np.full((layout.height(len(summaries[k : k + rows_per_page])), layout.width, 3), SHEET_BG, np.uint8)
        for k in range(0, max(len(summaries), 1), rows_per_page)
    ]

    thumbs: dict[int, str] = {}
    times: dict[int, Fraction] = {}
    pending = set(wanted)
    step = frame_duration(plan.video)
    rate = plan.video.avg_rate or 1 / step
    t0: Fraction | None = None
    try:
        for frame in reader.frames() if last >= 0 else ():
            ft = Fraction(frame.pts) * frame.time_base if frame.pts is not None else frame.index * step
            t0 = ft if t0 is None else t0
            if frame.index in firsts:
                times[frame.index] = ft - t0
            for row, slot, box in wanted.get(frame.index, ()):
                crop = cv2.cvtColor(viewable(face_crop(frame.image, box, thumb)), cv2.COLOR_RGB2BGR)
                shot = next((sh.index for sh in plan.shots if frame.index in sh), 0)
                _paste(sheets[row // rows_per_page], layout, row % rows_per_page, slot, crop, f"s{shot} {timecode(frame.index, rate)}")
                if slot == 0:
                    path = out / _thumb_file(summaries[row].identity_id)
                    _write_png(path, cv2.cvtColor(viewable(face_crop(frame.image, box, large)), cv2.COLOR_RGB2BGR))
                    thumbs[row] = str(path)
            pending.discard(frame.index)
            progress.update("faces", frame.index + 1, last + 1)
            if frame.index >= last:
                break
    finally:
        reader.close()  # joins the decode thread, also when we stop early or fail
    if pending:
        log.warning("%s: %d chosen frames were not decoded (from frame %d on); their cells stay empty", video, len(pending), min(pending))

    final = []
    for row, s in enumerate(summaries):
        if s.first_frame in times:
            s = replace(s, first_time=times[s.first_frame], first_clock=clock(times[s.first_frame]))
        final.append(replace(s, thumbnail=thumbs.get(row)))
    duration = plan.video.frame_count * step
    paths = [out / ("contact_sheet.png" if k == 0 else f"contact_sheet_{k + 1}.png") for k in range(len(sheets))]
    for k, (sheet, path) in enumerate(zip(sheets, paths)):
        _draw_header(sheet, layout, Path(video).name, plan, final, f", page {k + 1} of {len(sheets)}" if len(sheets) > 1 else "")
        for row, s in enumerate(final[k * rows_per_page : (k + 1) * rows_per_page]):
            _draw_row(sheet, layout, row, s, duration)
        if not final:
            cv2.putText(
                sheet, "no faces found", (layout.gap + 8, layout.header + layout.row_height // 2 + 8), FONT, 0.8, TEXT, 2, cv2.LINE_AA
            )
        _write_png(path, sheet)
    if len(paths) > 1:
        log.info("%s: %d identities on %d contact sheets (%s ... %s)", video, len(final), len(paths), paths[0].name, paths[-1].name)
    return paths[0], final


def with_thumbnails(plan: Plan, summaries: Sequence[IdentitySummary]) -> Plan:
    """The plan with each identity's ``thumbnail`` set from the summaries, for saving beside the video.

    Plugins and review tools show that picture next to the keep/anonymize switch.
    """
    paths = {s.identity_id: s.thumbnail for s in summaries if s.thumbnail}
    return replace(plan, identities=tuple(replace(i, thumbnail=paths.get(i.identity_id, i.thumbnail)) for i in plan.identities))


def _box_at(tracks: Sequence[Track], frame: int) -> np.ndarray | None:
    """The identity's best-scoring observed box in ``frame`` (tracks are contiguous: index by offset)."""
    found: list[tuple[float, np.ndarray]] = []
    for t in tracks:
        if not t.start <= frame < t.end:
            continue
        j = frame - t.start
        found.append((float(t.scores[j]) + (1.0 if t.observed[j] else 0.0), np.asarray(t.boxes[j], np.float64)))
    return max(found, key=lambda x: x[0])[1] if found else None


# -- who stays visible -------------------------------------------------------------------------


def kept_lines(plan: Plan, report: SelectionReport, photos: Sequence[str] = ()) -> list[str]:
    """What a selection leaves visible, for the terminal: kept tracks per identity with screen
    time, tracks of a kept identity anonymized anyway (and why), photos that matched nobody."""
    step = frame_duration(plan.video)
    by_id = {t.track_id: t for t in plan.tracks}
    kept = [c for c in report.choices if c.kept]
    frames = {f for c in kept for f in by_id[c.track_id].frames.tolist()}
    total = plan.video.frame_count * step
    share = f" ({float(len(frames) * step / total):.0%} of the video)" if total > 0 else ""
    idents = sorted({c.identity_id for c in kept})
    lines = [
        f"kept visible: {_count(len(kept), 'track')} of {_count(len(idents), 'identity')}, "
        f"{float(len(frames) * step):.1f} s on screen{share}"
        if kept
        else "kept visible: nobody (every face is anonymized)"
    ]
    for n in idents:
        mine = [c for c in kept if c.identity_id == n]
        secs = len({f for c in mine for f in by_id[c.track_id].frames.tolist()}) * step
        tracks = ", ".join(f"{c.track_id} (shot {by_id[c.track_id].shot_index}, {clock(by_id[c.track_id].start * step)})" for c in mine)
        lines.append(f"  person {n}: {float(secs):.1f} s, tracks {tracks}; {mine[0].reason}")
    for c in report.dropped():
        lines.append(f"  anonymized although linked to kept person {c.identity_id}: track {c.track_id}: {c.reason}")
    for p in report.unmatched_photos:
        name = photos[p] if p < len(photos) else f"photo {p + 1}"
        close = report.closest[p] if p < len(report.closest) else float("inf")
        lines.append(f"  {name}: matches no face in the video (closest {close:.2f})")
    return lines


def write_kept_sheet(
    video: str | os.PathLike[str], plan: Plan, track_ids: Sequence[int], path: str | os.PathLike[str], thumb: int = 128
) -> Path:
    """``path``: one thumbnail per kept track (its best detected face; track, identity, shot and
    time under it), so an editor sees before publishing exactly who is not anonymized."""
    by_id = {t.track_id: t for t in plan.tracks}
    tracks = [by_id[t] for t in track_ids if t in by_id]
    per_row, gap, band = 8, 6, 34
    rows = max(1, (len(tracks) + per_row - 1) // per_row)
    width = gap + per_row * (thumb + gap)
    sheet = np.full((44 + rows * (thumb + band + gap), width, 3), SHEET_BG, np.uint8)
    title = f"{Path(video).name}: {_count(len(tracks), 'track')} left visible" if tracks else f"{Path(video).name}: nobody left visible"
    _put(sheet, title, (gap + 4, 28), 0.6, TEXT, width - 12, True)
    wanted: dict[int, list[int]] = {}  # frame -> kept tracks shown from it
    for k, t in enumerate(tracks):
        wanted.setdefault(int(choose_best([t], plan.video.width, plan.video.height, 1)[0]), []).append(k)
    step = frame_duration(plan.video)
    ident = {tid: i.identity_id for i in plan.identities for tid in i.track_ids}
    if wanted:
        reader = VideoReader(video)
        try:
            plan.check_video(reader.info)
            last = max(wanted)
            for frame in reader.frames():
                for k in wanted.get(frame.index, ()):
                    t = tracks[k]
                    crop = cv2.cvtColor(viewable(face_crop(frame.image, t.boxes[frame.index - t.start], thumb)), cv2.COLOR_RGB2BGR)
                    x, y = gap + (k % per_row) * (thumb + gap), 44 + (k // per_row) * (thumb + band + gap)
                    sheet[y : y + thumb, x : x + thumb] = crop
                    cv2.rectangle(sheet, (x - 2, y - 2), (x + thumb + 1, y + thumb + 1), KEEP_COLOR, 2)
                    _put(sheet, f"track {t.track_id}, id {ident.get(t.track_id, -1)}", (x, y + thumb + 14), 0.4, TEXT, thumb)
                    _put(sheet, f"shot {t.shot_index}, {clock(t.start * step)}", (x, y + thumb + 29), 0.4, DIM_TEXT, thumb)
                if frame.index >= last:
                    break
        finally:
            reader.close()
    out = Path(path)
    _write_png(out, sheet)
    return out
