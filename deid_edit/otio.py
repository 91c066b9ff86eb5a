"""OpenTimelineIO hand-off: plans and their anonymized renders in, an ``.otio`` timeline out.

Input: one or more plans, each with the video rendered from it (and optionally a ``matte`` render).
Output: a timeline that editors import into Resolve (File > Import Timeline), Premiere, Kdenlive and
other NLEs, which relink the clips by path and source range. Next stage: the editor's NLE.

The anonymized render keeps frame count, every timestamp, size and audio of its source, so each clip
covers the whole render (``0..frame_count`` at the video's rate, from the media's start timecode when
it has one) exactly where the original would sit. The render carries the audio, so the audio track
references the same file. Each clip gets one marker per person (red: anonymized, green: kept) at
their first appearance, and the provenance (source, plan, mode, counts, version, date) under
``metadata["deid_edit"]``, so the timeline itself records what was hidden and from which file.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import opentimelineio as otio

from . import __version__
from .errors import ConfigError, EncodeError, InputError
from .faces import UNASSIGNED, summarize
from .io.atomic import write_atomic
from .io.decode import probe
from .plan import Plan, frac_str, load_plan

log = logging.getLogger(__name__)

METADATA_KEY = "deid_edit"
MATTE_MODE = "matte"  # the render mode whose output is a matte, not a picture (goes on its own track)
SUFFIX = ".otio"
PLAN_SUFFIX = ".deid.json"
COLORS = {"anonymize": otio.schema.MarkerColor.RED, "keep": otio.schema.MarkerColor.GREEN}


@dataclass(frozen=True)
class ClipSource:
    """One plan and the files that stand for its video on the timeline.

    ``media`` is what the main video track shows: the anonymized render, or the original when the
    render is a matte (``run --mode matte``), so the editor has both halves of the composite.
    """

    plan: Plan
    source: Path  # the original video the plan was made from
    media: Path
    matte: Path | None = None
    plan_path: Path | None = None
    mode: str | None = None  # render mode, when known (run/render); a plan does not record it


@dataclass(frozen=True)
class _Media:
    """What an NLE will see of one referenced file: its range in its own timecode, and audio."""

    path: Path
    rate: float
    start: int  # first frame's number in the file's own timecode (0 without one)
    timecode: str | None
    frames: int
    audio: bool

    def range(self) -> otio.opentime.TimeRange:
        return otio.opentime.TimeRange(
            otio.opentime.RationalTime(self.start, self.rate), otio.opentime.RationalTime(self.frames, self.rate)
        )

    def reference(self) -> otio.schema.ExternalReference:
        # absolute file:// URL, percent-encoded: what OTIO adapters and NLEs expect to relink
        return otio.schema.ExternalReference(target_url=self.path.resolve().as_uri(), available_range=self.range())


# -- checks -------------------------------------------------------------------------------------


def check_timeline_output(path: Path, force: bool, protect: Sequence[Path] = (), flag: str = "--otio") -> Path:
    """Refuse a timeline path that would lose data or not open in an NLE, before any long work.

    Only ``.otio`` is written: it is what Resolve, Premiere and Kdenlive import, and OTIO's own
    ``otioconvert`` turns it into EDL/FCP XML/AAF where an adapter plug-in is installed.
    """
    if path.suffix.lower() != SUFFIX:
        raise ConfigError(f"{flag} {path}: the timeline must be an {SUFFIX} file; name it e.g. {path.with_suffix(SUFFIX).name}")
    if path.is_dir():
        raise EncodeError(f"{path}: is a directory; give a timeline file name such as {path / ('timeline' + SUFFIX)}")
    for other in protect:
        if path.resolve() == Path(other).resolve():
            raise InputError(f"{path}: is also a video of this command; give the timeline its own name ending in {SUFFIX}")
    if path.exists() and not force:
        raise EncodeError(f"{path}: already exists; use --force to overwrite it or choose another name")
    return path


def start_timecode(path: Path) -> str | None:
    """The file's start timecode (``HH:MM:SS:FF``, ``;`` for drop frame) from its video stream, its
    timecode track or the container; None when it has none (the NLE then counts from 00:00:00:00)."""
    try:
        with av.open(str(path), metadata_errors="ignore") as c:
            streams = [*c.streams.video, *c.streams.data]
            for meta in [*(s.metadata for s in streams), c.metadata]:
                tc = meta.get("timecode")
                if tc:
                    return str(tc)
    except (av.FFmpegError, OSError):
        log.info("%s: unreadable; no start timecode taken from it", path)
    return None


def _timecode_frame(tc: str | None, rate: float, path: Path) -> int:
    """Frame number of a start timecode at ``rate``; 0 (with a warning) when it cannot be read."""
    if not tc:
        return 0
    try:
        return int(otio.opentime.from_timecode(tc, rate).value)
    except (ValueError, RuntimeError) as exc:
        log.warning("%s: start timecode %r unusable at %.3f fps (%s); the timeline counts from 0", path, tc, rate, exc)
        return 0


def _count_frames(path: Path) -> int:
    """Video packets in the file: the frame count when the container does not store one (MKV, WebM)."""
    with av.open(str(path), metadata_errors="ignore") as c:
        return sum(1 for p in c.demux(c.streams.video[0]) if p.size)


def media_for(path: Path, plan: Plan, plan_name: str, role: str) -> _Media:
    """Probe ``path`` and check it is a render of ``plan`` (frame count, size); raises ``InputError``.

    A render of another plan or a trimmed export would relink to the wrong frames in the NLE, so a
    mismatch stops here with the file named rather than producing a timeline that looks right.
    """
    if not path.is_file():
        raise InputError(
            f"{path}: no such {role} file; render it from {plan_name} first (deid-edit render VIDEO --plan PLAN -o {path}) "
            f"or give its path with --{'matte' if role == 'matte' else 'media'}"
        )
    info = probe(path)
    frames = info.frame_count or _count_frames(path)
    want = plan.video
    if frames != want.frame_count or (info.width, info.height) != (want.width, want.height):
        raise InputError(
            f"{path}: has {frames} frames of {info.width}x{info.height} but {plan_name} covers {want.frame_count} of "
            f"{want.width}x{want.height}; give the {role} rendered from this plan"
        )
    rate_q = info.avg_rate or want.avg_rate
    rate = float(rate_q)
    tc = start_timecode(path)
    return _Media(path, rate, _timecode_frame(tc, rate, path), tc, frames, info.audio_streams > 0)


# -- building -----------------------------------------------------------------------------------


def _markers(plan: Plan, media: _Media) -> list[otio.schema.Marker]:
    """One marker per person at their first appearance, spanning the first track they are in."""
    tracks = {t.track_id: t for t in plan.tracks}
    claimed = {k for i in plan.identities for k in i.track_ids}
    out = []
    for s in summarize(plan, best=0):
        if s.first_frame < 0:
            continue  # an identity without samples has no place on the timeline
        ids = [t for t in plan.tracks if t.track_id not in claimed] if s.identity_id == UNASSIGNED else None
        if ids is None:
            ident = next(i for i in plan.identities if i.identity_id == s.identity_id)
            ids = [tracks[k] for k in ident.track_ids if k in tracks]
        first = min(ids, key=lambda t: (t.start, t.track_id))
        name = s.label or f"person {s.identity_id}"
        verb = "anonymized" if s.action == "anonymize" else "kept (not anonymized)"
        comment = (
            f"{verb}; on screen {float(s.screen_time):.2f} s ({s.frames} frames) in "
            f"{s.shots} shot{'s' if s.shots != 1 else ''}, {s.tracks} track{'s' if s.tracks != 1 else ''}"
        )
        out.append(
            otio.schema.Marker(
                name=name,
                marked_range=otio.opentime.TimeRange(
                    otio.opentime.RationalTime(media.start + first.start, media.rate),
                    otio.opentime.RationalTime(first.end - first.start, media.rate),
                ),
                color=COLORS[s.action],
                comment=comment,
                metadata={
                    METADATA_KEY: {
                        "identity_id": s.identity_id,
                        "action": s.action,
                        "frames": s.frames,
                        "shots": s.shots,
                        "tracks": s.tracks,
                        "screen_time": frac_str(Fraction(s.screen_time)),
                    }
                },
            )
        )
    return out


def _provenance(item: ClipSource, media: _Media) -> dict[str, Any]:
    """What this clip is and where it came from, so the timeline alone answers 'what was hidden'."""
    actions = [i.action for i in item.plan.identities]
    prov: dict[str, Any] = {
        "source": str(item.source.resolve()),
        "output": str((item.matte if item.mode == MATTE_MODE and item.matte else item.media).resolve()),
        "media": str(media.path.resolve()),
        "identities": {"total": len(actions), "anonymized": actions.count("anonymize"), "kept": actions.count("keep")},
        "frames": item.plan.frame_count,
        "rate": frac_str(Fraction(item.plan.video.avg_rate)),
        "analyzed_by": item.plan.generator,
    }
    if item.mode:
        prov["mode"] = item.mode
    if item.plan_path:
        prov["plan"] = str(item.plan_path.resolve())
    if item.matte:
        prov["matte"] = str(item.matte.resolve())
    if media.timecode:
        prov["start_timecode"] = media.timecode
    source_tc = start_timecode(item.source) if item.source.is_file() else None
    if source_tc:
        prov["source_timecode"] = source_tc
        if source_tc != media.timecode:
            log.warning(
                "%s: starts at timecode %s but %s has %s; the timeline uses the render's own, so match it to the original by frame",
                item.source,
                source_tc,
                media.path,
                media.timecode or "none",
            )
    return prov


def _clip(media: _Media, name: str, metadata: dict[str, Any] | None = None) -> otio.schema.Clip:
    return otio.schema.Clip(name=name, media_reference=media.reference(), source_range=media.range(), metadata=metadata or {})


def _gap(media: _Media) -> otio.schema.Gap:
    return otio.schema.Gap(source_range=otio.opentime.TimeRange(duration=otio.opentime.RationalTime(media.frames, media.rate)))


def build_timeline(items: Sequence[ClipSource], name: str) -> otio.schema.Timeline:
    """A timeline with the clips one after another: video, matte (if any) and audio tracks aligned.

    A clip without a matte or without audio leaves a gap of its length on that track, so every
    track stays in step with the main video track.
    """
    if not items:
        raise ConfigError("otio: no plan given; give at least one PLAN")
    main = [media_for(i.media, i.plan, str(i.plan_path or i.source), "video") for i in items]
    mattes = [media_for(i.matte, i.plan, str(i.plan_path or i.source), MATTE_MODE) if i.matte else None for i in items]
    matte_mode_run = any(i.mode == MATTE_MODE for i in items)
    video = otio.schema.Track(name="source" if matte_mode_run else "anonymized", kind=otio.schema.TrackKind.Video)
    matte = otio.schema.Track(name=MATTE_MODE, kind=otio.schema.TrackKind.Video)
    audio = otio.schema.Track(name="audio", kind=otio.schema.TrackKind.Audio)
    provenance = []
    for item, media, matte_media in zip(items, main, mattes):
        prov = _provenance(item, media)
        provenance.append(prov)
        clip = _clip(media, media.path.name, {METADATA_KEY: prov})
        clip.markers.extend(_markers(item.plan, media))
        video.append(clip)
        matte.append(_clip(matte_media, matte_media.path.name) if matte_media else _gap(media))
        audio.append(_clip(media, media.path.name) if media.audio else _gap(media))
    timeline = otio.schema.Timeline(name=name, global_start_time=otio.opentime.RationalTime(0, main[0].rate))
    timeline.tracks.append(video)
    if any(mattes):
        timeline.tracks.append(matte)
    if any(m.audio for m in main):
        timeline.tracks.append(audio)
    meta: dict[str, Any] = {
        "version": __version__,
        "generator": f"deid-edit {__version__}",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "clips": provenance,
    }
    if len(provenance) == 1:
        meta.update(provenance[0])  # a one-clip timeline: its provenance at the top, where people look
    timeline.metadata[METADATA_KEY] = meta
    return timeline


def write_timeline(timeline: otio.schema.Timeline, path: Path, force: bool, flag: str = "--otio") -> Path:
    """Write OTIO JSON atomically (temporary file beside the target, then rename)."""
    check_timeline_output(path, force, flag=flag)
    text = otio.adapters.write_to_string(timeline, "otio_json")
    write_atomic(path, text, EncodeError, "the timeline", "choose a writable location", make_parent=True)
    return path


# -- entry points -------------------------------------------------------------------------------


def render_source(video: Path, output: Path, plan: Plan, mode: str, plan_path: Path | None = None) -> ClipSource:
    """The clip of one ``run``/``render``: the render on the video track, or, for a matte render,
    the original on the video track and the matte above it (the editor composites their own effect)."""
    if mode == MATTE_MODE:
        return ClipSource(plan, video, video, matte=output, plan_path=plan_path, mode=mode)
    return ClipSource(plan, video, output, plan_path=plan_path, mode=mode)


def source_of(plan: Plan, plan_path: Path) -> Path:
    """The plan's source video: as recorded, else beside the plan (``VIDEO.deid.json`` sidecars travel
    with their video when a folder is moved)."""
    recorded = Path(plan.video.path)
    candidates = [recorded, plan_path.parent / recorded.name]
    if plan_path.name.endswith(PLAN_SUFFIX):
        candidates.append(plan_path.with_name(plan_path.name[: -len(PLAN_SUFFIX)]))
    return next((c for c in candidates if c.is_file()), recorded)


def sources_from_plans(plan_paths: Sequence[Path], media: Sequence[Path] = (), mattes: Sequence[Path] = ()) -> list[ClipSource]:
    """One ``ClipSource`` per plan; media default to ``VIDEO.anon.EXT`` (what ``run`` writes)."""
    from .pipeline import default_output

    for flag, given in (("--media", media), ("--matte", mattes)):
        if given and len(given) != len(plan_paths):
            raise ConfigError(f"{flag}: give one file per PLAN ({len(plan_paths)} plans, {len(given)} files) or none")
    out = []
    for k, plan_path in enumerate(plan_paths):
        plan = load_plan(plan_path)
        source = source_of(plan, plan_path)
        out.append(
            ClipSource(plan, source, media[k] if media else default_output(source), mattes[k] if mattes else None, plan_path=plan_path)
        )
    return out
