"""render: a video and its Plan in, the anonymized video out.

Decodes again, anonymizes the frames that hold regions (in YUV where it can), passes the others
through untouched, copies audio packet by packet and encodes. Privacy fails closed: a frame the
plan does not cover stops the render and nothing is written. Next stage: the output file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import av

from ..config import EncodeConfig, RenderConfig
from ..errors import EncodeError, InputError, PlanError
from ..identities import (
    Selection,
)
from ..io.decode import VideoReader, open_input, probe, upright_k
from ..io.encode import open_writer
from ..plan import Plan, load_plan
from ..progress import NullProgress, ProgressSink
from ..render import Anonymizer, get_anonymizer
from ..render.planes import apply_yuv420
from ..render.shapes import to_coded
from ..types import FaceRegion, VideoInfo
from .selection import SelectionHook, apply_selection

if TYPE_CHECKING:
    from ..io.encode import VideoWriter
    from ..io.threaded import ThreadedWriter

log = logging.getLogger(__name__)


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


def open_output(
    video: Path, output: Path, info: VideoInfo, ecfg: EncodeConfig, threaded: bool
) -> tuple[av.container.InputContainer, VideoWriter | ThreadedWriter]:
    """The source opened for its packets and the writer of ``output``; an encoder that cannot start
    is a clear error, and the source is closed again whatever fails."""
    source = open_input(video)
    try:
        return source, open_writer(output, source, info, ecfg, threaded=threaded)
    except av.FFmpegError as exc:
        source.close()
        raise EncodeError(f"{output}: cannot set up the encoder ({exc}); try another --codec or container") from exc
    except BaseException:
        source.close()
        raise


def render_frame(
    frame: av.VideoFrame,
    regions: Sequence[FaceRegion],
    anonymizer: Anonymizer,
    writer: VideoWriter | ThreadedWriter,
    rcfg: RenderConfig,
    k: int,
    info: VideoInfo,
) -> None:
    """Anonymize one decoded frame's ``regions`` (upright coordinates) and hand it to the writer.

    Frames and arrays go to the writer (maybe its thread) after their last change here."""
    coded = to_coded(regions, k, info.coded_width, info.coded_height)
    if regions and anonymizer.hides_faces and not anonymizer.full_frame and apply_yuv420(frame, coded, anonymizer, rcfg):
        writer.write_frame(frame)  # only the regions were converted and changed
    elif regions or anonymizer.full_frame:
        rgb = frame.to_ndarray(format="rgb24")
        anonymizer.apply(rgb, coded, rcfg)
        writer.write_array(rgb, frame.pts, frame.time_base, like=frame)
    else:
        writer.write_frame(frame)


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
    decide_tracks(video, plan, anonymizer, rcfg, k, info)
    source, writer = open_output(video, output, info, ecfg, encode_thread)
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
            render_frame(frame, plan.regions_at(index, include_kept=not anonymizer.hides_faces), anonymizer, writer, rcfg, k, info)
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
    log_anonymizer_stats(anonymizer)
    return result


def decide_tracks(video: Path, plan: Plan, anonymizer: Anonymizer, rcfg: RenderConfig, k: int, info: VideoInfo) -> None:
    """Let an anonymizer that decides per track (cloak) see its sample frames before rendering:
    one decode, converting only those frames. Why: a track must be cloaked or blurred for its
    whole length, and the frames that show whether it can be are spread over the track."""
    sample_frames = getattr(anonymizer, "sample_frames", None)
    if sample_frames is None:
        return
    hides = anonymizer.hides_faces

    def shown(track_id: int) -> bool:
        ident = plan.identity_of(track_id)
        return ident is not None and ident.action == "keep"

    tracks = [t for t in plan.tracks if not plan.is_weak(t.track_id) and not shown(t.track_id)]  # weak ones are blurred
    wanted = sample_frames(tracks, plan.frame_count)
    if not wanted:
        return
    todo = set(wanted)
    reader = VideoReader(video)
    try:
        for item in reader.items():
            if isinstance(item, av.Packet):
                continue
            index, frame = item
            if index in todo:
                regions = to_coded(plan.regions_at(index, include_kept=not hides), k, info.coded_width, info.coded_height)
                anonymizer.decide(frame.to_ndarray(format="rgb24"), regions, index, rcfg)  # type: ignore[attr-defined]
                todo.discard(index)
                if not todo:
                    break
    finally:
        reader.close()
    anonymizer.end_decisions()  # type: ignore[attr-defined]


def log_anonymizer_stats(anonymizer: Anonymizer) -> None:
    """What an anonymizer that keeps count says at the end (cloak: faces cloaked, and blurred
    instead because too small or still recognizable); a warning when any was blurred."""
    stats = getattr(anonymizer, "stats", None)
    if stats is not None:
        log.log(logging.WARNING if stats.blurred else logging.INFO, "%s", stats.summary())
