"""OpenTimelineIO hand-off: plans and their anonymized renders in, an NLE timeline out.

Input: one or more plans, each with its render (and optionally a ``matte`` render). Output: ``.otio``
(Resolve, Kdenlive, any OTIO reader) or ``.xml`` (FCP 7 XML through ``otio-fcp-adapter``, for
Premiere Pro); next stage: the editor's NLE, which relinks by path and source range. Layout, bottom
to top: V1 the original (disabled, so it is never published by accident), V2 the matte when there is
one, on top the anonymized render, the one enabled picture, with one audio track from the top render.
Every layer covers the same frames (renders keep the source's frames and timestamps). The top clip
carries a marker per identity (red anonymized, green kept) and the provenance in ``metadata["deid_edit"]``.
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

from ._version import __version__
from .errors import ConfigError, EncodeError, InputError
from .faces import UNASSIGNED, summarize
from .io.atomic import write_atomic
from .io.decode import probe
from .plan import Plan, frac_str, load_plan
from .sidecars import default_output, video_of_plan

log = logging.getLogger(__name__)

METADATA_KEY = "deid_edit"
MATTE_MODE = "matte"  # the render mode whose output is a matte, not a picture (goes on its own track)
SUFFIX = ".otio"
FCP_SUFFIX = ".xml"
FCP_ADAPTER = "fcp_xml"  # registered by the otio-fcp-adapter package (a dependency)
FORMATS = {SUFFIX: "otio_json", FCP_SUFFIX: FCP_ADAPTER}  # the timeline's suffix picks its format
ORIGINAL, ANONYMIZED = "original", "anonymized"  # track names (with MATTE_MODE), bottom to top
COLORS = {"anonymize": otio.schema.MarkerColor.RED, "keep": otio.schema.MarkerColor.GREEN}
# Premiere's own marker colour codes in FCP 7 XML (<pproColor>): FCP 7 XML has no marker colour
PPRO_COLORS = {otio.schema.MarkerColor.RED: 4281740498, otio.schema.MarkerColor.GREEN: 4281828977}


@dataclass(frozen=True)
class ClipSource:
    """One plan and the files that stand for its video on the timeline.

    ``source`` goes on the bottom track, disabled; ``media`` (the anonymized render) on top. A matte
    render (``run --mode matte``) has no anonymized picture: ``media`` is None and the matte is on top.
    """

    plan: Plan
    source: Path  # the original video the plan was made from
    media: Path | None  # the anonymized render
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
        # absolute file:// URL, percent-encoded: what OTIO adapters and NLEs expect to relink; the
        # timecode as the file states it, so the FCP export can say drop frame where it is
        meta = {METADATA_KEY: {"timecode": self.timecode}} if self.timecode else {}
        return otio.schema.ExternalReference(target_url=self.path.resolve().as_uri(), available_range=self.range(), metadata=meta)


# -- checks -------------------------------------------------------------------------------------


def check_timeline_output(path: Path, force: bool, protect: Sequence[Path] = (), flag: str = "--otio") -> Path:
    """Refuse a timeline path that would lose data or not open in an NLE, before any long work.

    The suffix picks the format: ``.otio`` (Resolve, Kdenlive, any OTIO reader) or ``.xml`` (FCP 7
    XML, what Premiere Pro imports); anything else would be written in a format its name hides.
    """
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(
            f"{flag} {path}: name the timeline .otio (OpenTimelineIO: Resolve, Kdenlive) or .xml (FCP 7 XML: Premiere), "
            f"e.g. {path.with_suffix(SUFFIX).name}"
        )
    if suffix == FCP_SUFFIX:
        _require_fcp_adapter(flag, path)
    if path.is_dir():
        raise EncodeError(f"{path}: is a directory; give a timeline file name such as {path / ('timeline' + SUFFIX)}")
    for other in protect:
        if path.resolve() == Path(other).resolve():
            raise InputError(f"{path}: is also a video of this command; give the timeline its own name ending in {SUFFIX}")
    if path.exists() and not force:
        raise EncodeError(f"{path}: already exists; use --force to overwrite it or choose another name")
    return path


def _require_fcp_adapter(flag: str, path: Path) -> None:
    """The FCP 7 XML writer is a plug-in (``otio-fcp-adapter``); say how to get it, before the work."""
    try:
        otio.adapters.from_name(FCP_ADAPTER)
    except otio.exceptions.NotSupportedError as exc:
        raise ConfigError(f"{flag} {path}: FCP 7 XML needs the OTIO adapter plug-in; pip install otio-fcp-adapter") from exc


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


def original_media(path: Path, like: _Media) -> _Media:
    """The original as the bottom layer: ``like``'s frames at ``like``'s rate (a render is its
    source frame for frame), from the original's own start timecode.

    A missing original (moved, or withheld from the editing machine) is still referenced where it
    was, offline in the NLE until relinked, rather than failing a hand-off that does not need it.
    """
    if not path.is_file():
        log.warning("%s: original not found; the timeline refers to it there (offline in the NLE until relinked)", path)
        return _Media(path, like.rate, 0, None, like.frames, False)
    tc = start_timecode(path)
    return _Media(path, like.rate, _timecode_frame(tc, like.rate, path), tc, like.frames, False)


# -- building -----------------------------------------------------------------------------------


def _marker_name(identity_id: int, label: str) -> str:
    """What the editor reads in the NLE's marker list, which keeps no metadata: name and id."""
    if identity_id == UNASSIGNED:
        return label
    plain = f"person {identity_id}"
    return f"{label} ({plain})" if label and label != plain else plain


def _markers(plan: Plan, media: _Media) -> list[otio.schema.Marker]:
    """One marker per identity at their first appearance, spanning the first track they are in."""
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
        verb = "anonymized" if s.action == "anonymize" else "kept (not anonymized)"
        who = "unassigned faces" if s.identity_id == UNASSIGNED else f"person {s.identity_id}"
        comment = (
            f"{who} {verb}; on screen {float(s.screen_time):.2f} s ({s.frames} frames) in "
            f"{s.shots} shot{'s' if s.shots != 1 else ''}, {s.tracks} track{'s' if s.tracks != 1 else ''}"
        )
        out.append(
            otio.schema.Marker(
                name=_marker_name(s.identity_id, s.label),
                marked_range=otio.opentime.TimeRange(
                    otio.opentime.RationalTime(media.start + first.start, media.rate),
                    otio.opentime.RationalTime(first.end - first.start, media.rate),
                ),
                color=COLORS[s.action],
                comment=comment,
                metadata={
                    METADATA_KEY: {
                        "identity_id": s.identity_id,
                        "label": s.label,
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


def _provenance(item: ClipSource, media: _Media, original: _Media) -> dict[str, Any]:
    """What this clip is and where it came from, so the timeline alone answers 'what was hidden'."""
    actions = [i.action for i in item.plan.identities]
    prov: dict[str, Any] = {
        "source": str(item.source.resolve()),
        "output": str(media.path.resolve()),
        "media": str(media.path.resolve()),
        "identities": {"total": len(actions), "anonymized": actions.count("anonymize"), "kept": actions.count("keep")},
        "frames": item.plan.frame_count,
        "size": [item.plan.video.width, item.plan.video.height],
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
    if original.timecode:
        prov["source_timecode"] = original.timecode
        if original.timecode != media.timecode:
            log.warning(
                "%s: starts at timecode %s but %s has %s; the timeline lines them up frame for frame, each from its own timecode",
                item.source,
                original.timecode,
                media.path,
                media.timecode or "none",
            )
    return prov


def _clip(media: _Media, name: str, metadata: dict[str, Any] | None = None, enabled: bool = True) -> otio.schema.Clip:
    clip = otio.schema.Clip(name=name, media_reference=media.reference(), source_range=media.range(), metadata=metadata or {})
    clip.enabled = enabled
    return clip


def _gap(media: _Media) -> otio.schema.Gap:
    return otio.schema.Gap(source_range=otio.opentime.TimeRange(duration=otio.opentime.RationalTime(media.frames, media.rate)))


def _track(name: str, kind: str, enabled: bool = True) -> otio.schema.Track:
    track = otio.schema.Track(name=name, kind=kind)
    track.enabled = enabled
    return track


def build_timeline(items: Sequence[ClipSource], name: str) -> otio.schema.Timeline:
    """A timeline with the clips one after another, every layer aligned (see the module docstring).

    Only the top render is enabled: the original below it (and a matte between them) is disabled
    on the track and on each clip, so exporting the sequence as imported never shows the original,
    even where the editor trims, moves or deletes the top clip. A clip without a matte or without
    audio leaves a gap of its length on that track, so every track stays in step.
    """
    if not items:
        raise ConfigError("otio: no plan given; give at least one PLAN")
    layers = []
    for i in items:
        label = str(i.plan_path or i.source)
        anon = media_for(i.media, i.plan, label, "video") if i.media else None
        matte = media_for(i.matte, i.plan, label, MATTE_MODE) if i.matte else None
        top = anon or matte
        if top is None:
            raise ConfigError(f"{label}: no render to put on the timeline; give its anonymized video")
        layers.append((original_media(i.source, top), matte, anon, top))
    any_anon = any(anon for _, _, anon, _ in layers)
    matte_live = not any_anon  # a matte render alone is the top layer, shown so no face can be
    original = _track(ORIGINAL, otio.schema.TrackKind.Video, enabled=False)
    matte_track = _track(MATTE_MODE, otio.schema.TrackKind.Video, enabled=matte_live)
    anonymized = _track(ANONYMIZED, otio.schema.TrackKind.Video)
    audio = _track("audio", otio.schema.TrackKind.Audio)
    provenance = []
    for item, (orig, matte, anon, top) in zip(items, layers):
        prov = _provenance(item, top, orig)
        provenance.append(prov)
        top_clip = _clip(top, top.path.name, {METADATA_KEY: prov})
        top_clip.markers.extend(_markers(item.plan, top))
        original.append(_clip(orig, f"{orig.path.name} (ORIGINAL, not anonymized)", enabled=False))
        if matte is top:
            matte_track.append(top_clip)
        else:
            matte_track.append(_clip(matte, matte.path.name, enabled=matte_live) if matte else _gap(top))
        anonymized.append(top_clip if anon else _gap(top))
        audio.append(_clip(top, top.path.name) if top.audio else _gap(top))
    timeline = otio.schema.Timeline(name=name, global_start_time=otio.opentime.RationalTime(0, layers[0][3].rate))
    timeline.tracks.append(original)
    if any(matte for _, matte, _, _ in layers):
        timeline.tracks.append(matte_track)
    if any_anon:
        timeline.tracks.append(anonymized)
    if any(top.audio for *_, top in layers):
        timeline.tracks.append(audio)
    meta: dict[str, Any] = {
        "version": __version__,
        "generator": f"deid-edit {__version__}",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "layout": [t.name for t in timeline.tracks if t.kind == otio.schema.TrackKind.Video],
        "clips": provenance,
    }
    if len(provenance) == 1:
        meta.update(provenance[0])  # a one-clip timeline: its provenance at the top, where people look
    timeline.metadata[METADATA_KEY] = meta
    return timeline


# -- FCP 7 XML (Premiere) -----------------------------------------------------------------------


def fcp_rate(rate: float) -> float:
    """The FCP 7 XML rate for ``rate``: an integer timebase, or one of its NTSC (x1000/1001) rates.

    FCP XML counts whole frames at such a rate and the adapter rounds any other rate up (30.02 fps
    would become 31 NTSC), so an odd average (phone footage) is snapped to the nearest: the
    frames stay exact, only their nominal rate changes.
    """
    n = max(1, int(rate))
    best = min((n, n * 1000 / 1001, n + 1, (n + 1) * 1000 / 1001), key=lambda r: abs(r - rate))
    if abs(best - rate) > 1e-6 * rate:
        if abs(best - rate) > 1e-3 * rate:
            log.warning("%.4f fps is not an FCP XML rate; the XML counts the same frames at %.4f fps", rate, best)
        return best
    return rate


def _retimed(r: otio.opentime.TimeRange) -> otio.opentime.TimeRange:
    rate = fcp_rate(r.start_time.rate)
    return otio.opentime.TimeRange(otio.opentime.RationalTime(r.start_time.value, rate), otio.opentime.RationalTime(r.duration.value, rate))


def _fcp_file_url(url: str) -> str:
    """``file://localhost/...``: the form Premiere and Final Cut 7 write and relink."""
    return "file://localhost/" + url[len("file:///") :] if url.startswith("file:///") else url


def fcp_timeline(timeline: otio.schema.Timeline) -> otio.schema.Timeline:
    """A copy of ``timeline`` saying in FCP 7 XML terms (``metadata["fcp_xml"]``, which the adapter
    writes as elements) what the adapter would otherwise drop or get wrong.

    Disabled tracks and clips get ``<enabled>FALSE</enabled>``; markers their comment, Premiere's
    colour code and a position from the media's first frame (FCP's clip marker time, where OTIO
    counts from the start timecode); drop-frame start timecodes say DF; rates are FCP rates; audio
    clips name their source channel; the sequence gets the picture size.
    """
    tl = timeline.deepcopy()
    tl.global_start_time = otio.opentime.RationalTime(tl.global_start_time.value, fcp_rate(tl.global_start_time.rate))
    for track in tl.tracks:
        if not track.enabled:
            track.metadata[FCP_ADAPTER] = {"enabled": "FALSE"}
        for item in track:
            item.source_range = _retimed(item.source_range)
            if not isinstance(item, otio.schema.Clip):
                continue
            fcp: dict[str, Any] = {}
            if not item.enabled:
                fcp["enabled"] = "FALSE"
            if track.kind == otio.schema.TrackKind.Audio:
                fcp["sourcetrack"] = {"mediatype": "audio", "trackindex": 1}
            if fcp:
                item.metadata[FCP_ADAPTER] = fcp
            ref = item.media_reference
            ref.target_url = _fcp_file_url(ref.target_url)
            ref.available_range = _retimed(ref.available_range)
            tc = ref.metadata.get(METADATA_KEY, {}).get("timecode")
            if tc and ";" in tc:
                ref.metadata[FCP_ADAPTER] = {"timecode": {"displayformat": "DF"}}
            media_start = ref.available_range.start_time.value
            for m in item.markers:
                r = _retimed(m.marked_range)
                m.marked_range = otio.opentime.TimeRange(
                    otio.opentime.RationalTime(r.start_time.value - media_start, r.start_time.rate), r.duration
                )
                marker_md: dict[str, Any] = {"comment": m.comment}
                if m.color in PPRO_COLORS:
                    marker_md["pproColor"] = PPRO_COLORS[m.color]
                m.metadata[FCP_ADAPTER] = marker_md
    size = _picture_size(tl)
    if size:
        tl.metadata[FCP_ADAPTER] = {"media": {"video": {"format": {"samplecharacteristics": size}}}}
    return tl


def _picture_size(timeline: otio.schema.Timeline) -> dict[str, Any]:
    """The first clip's picture size from the provenance, for the sequence's format (else Premiere
    makes a default-size sequence and scales the clips)."""
    clips = timeline.metadata.get(METADATA_KEY, {}).get("clips", [])
    size = clips[0].get("size") if clips else None
    if not size:
        return {}
    return {"width": int(size[0]), "height": int(size[1]), "pixelaspectratio": "square", "fielddominance": "none"}


def write_timeline(timeline: otio.schema.Timeline, path: Path, force: bool, flag: str = "--otio") -> Path:
    """Write the timeline in the format its suffix names, atomically (temporary file, then rename)."""
    check_timeline_output(path, force, flag=flag)
    adapter = FORMATS[path.suffix.lower()]
    if adapter == FCP_ADAPTER:
        text = otio.adapters.write_to_string(fcp_timeline(timeline), adapter)
        # the declaration and doctype Premiere's own exports carry
        text = text.replace('<?xml version="1.0" ?>', '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE xmeml>', 1)
    else:
        text = otio.adapters.write_to_string(timeline, adapter)
    write_atomic(path, text, EncodeError, "the timeline", "choose a writable location", make_parent=True)
    return path


# -- entry points -------------------------------------------------------------------------------


def render_source(video: Path, output: Path, plan: Plan, mode: str, plan_path: Path | None = None) -> ClipSource:
    """The clip of one ``run``/``render``: the original below the render, or, for a matte render,
    below the matte (the editor composites their own effect through it)."""
    if mode == MATTE_MODE:
        return ClipSource(plan, video, None, matte=output, plan_path=plan_path, mode=mode)
    return ClipSource(plan, video, output, plan_path=plan_path, mode=mode)


def source_of(plan: Plan, plan_path: Path) -> Path:
    """The plan's source video: as recorded, else beside the plan (``VIDEO.deid.json`` sidecars travel
    with their video when a folder is moved)."""
    recorded = Path(plan.video.path)
    candidates = [recorded, plan_path.parent / recorded.name]
    beside = video_of_plan(plan_path)
    if beside is not None:
        candidates.append(beside)
    return next((c for c in candidates if c.is_file()), recorded)


def sources_from_plans(plan_paths: Sequence[Path], media: Sequence[Path] = (), mattes: Sequence[Path] = ()) -> list[ClipSource]:
    """One ``ClipSource`` per plan; media default to ``VIDEO.anon.EXT`` (what ``run`` writes)."""

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
