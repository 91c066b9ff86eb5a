"""Pictures of who was found: the contact sheet, one large picture per identity, the kept sheet.

Input: a ``Plan``, its summaries (``faces.summary``) and the video it was made from (given
explicitly: a moved plan may name a stale path; it is checked against the plan). Output:
``contact_sheet.png`` (more pages for crowds), ``identity_<N>.png`` and the kept sheet, written
atomically. Next: the editor looks, chooses who is kept, then render. One sequential decode collects
crops on the chosen frames only and stops after the last of them; dark crops are brightened in the
pictures only, never in the render.
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

from ..errors import ConfigError, EncodeError
from ..io.atomic import write_atomic
from ..io.decode import VideoReader
from ..plan import Plan, region_top
from ..progress import NullProgress, ProgressSink
from ..timefmt import clock, timecode
from ..types import Track
from .summary import BEST_PER_IDENTITY, IdentitySummary, choose_best, count_noun, frame_duration, groups, summarize

log = logging.getLogger(__name__)

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


def _thumb_file(identity_id: int) -> str:
    return f"identity_{identity_id}.png" if identity_id >= 0 else "identity_unassigned.png"


def _draw_header(
    sheet: np.ndarray, layout: SheetLayout, video_name: str, plan: Plan, summaries: Sequence[IdentitySummary], page: str
) -> None:
    v = plan.video
    kept = sum(s.action == "keep" for s in summaries)
    duration = v.frame_count * frame_duration(v)
    title = f"{video_name}   {v.width}x{v.height}   {clock(duration)}   {v.frame_count} frames   {count_noun(len(plan.shots), 'shot')}"
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
        (f"{count_noun(s.shots, 'shot')}, {count_noun(s.tracks, 'track')}", TEXT, False),
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

    members = {g[0]: g[3] for g in groups(plan)}
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
    title = f"{Path(video).name}: {count_noun(len(tracks), 'track')} left visible" if tracks else f"{Path(video).name}: nobody left visible"
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
