"""The ``deid-edit`` command: the only module importing click and tqdm.

Options default to ``None``; the command builds the option dataclasses from what the user set and
calls one pipeline function. ``main()`` maps failures to exit codes: 1 for a ``DeidError`` (one
clear line), 2 for usage and option errors, 130 for Ctrl-C (partial output already removed by the
pipeline). ``DEID_EDIT_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import sidecars
from ._version import __version__
from .config import AnalyzeConfig, encode_config, render_config
from .errors import DeidError
from .progress import JsonProgress, NullProgress, ProgressSink
from .render import ANONYMIZERS

log = logging.getLogger("deid_edit")


class TqdmProgress:
    """A tqdm bar per stage, on stderr."""

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.bars: dict[str, Any] = {}

    def update(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=f"{self.label}{stage}", unit="frame", leave=True, file=sys.stderr)
        if total != bar.total:
            bar.total = total
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    def event(self, stage: str, **fields: Any) -> None:
        for bar in self.bars.values():
            bar.close()


def make_progress(kind: str, **context: Any) -> ProgressSink:
    if kind == "json":
        return JsonProgress(**context)
    if kind == "bar" and sys.stderr.isatty():
        return TqdmProgress(f"{context['file']}: " if "file" in context else "")
    return NullProgress()


def _color(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[int, int, int] | None:
    if value is None:
        return None
    named = {"black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128), "gray": (128, 128, 128)}
    if value.lower() in named:
        return named[value.lower()]
    try:
        if value.startswith("#") and len(value) == 7:
            return tuple(int(value[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
        parts = tuple(int(v) for v in value.split(","))
        if len(parts) == 3:
            return parts  # type: ignore[return-value]
    except ValueError:
        pass
    raise click.BadParameter(f"{value!r}: use R,G,B (0..255), #rrggbb, black, white or grey")


def analyze_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--threshold", type=float, help="Detection score threshold (default 0.3)."),
        click.option("--min-face", type=int, help="Smallest face to find, in pixels (default 36)."),
        click.option("--det-size", "max_side", type=int, help="Detector input long side when faces allow (default 960)."),
        click.option("--batch-size", type=int, help="Frames per detector batch."),
        click.option(
            "--coarse-every",
            type=click.IntRange(-1),
            help="Quiet scenes (no face, or a few large ones): detect at half scale except every N-th frame; "
            "0 = never, -1 = automatic (3 on the CPU, never on a GPU).",
        ),
        click.option(
            "--weak-hits",
            type=click.IntRange(0),
            help="A place the detector scores low (under --threshold) in this many frames is masked as a dim face "
            "(default 8; 0 = off: cleaner backgrounds, but dim and defocused faces may show).",
        ),
        click.option("--device", help="auto, cpu, cuda[:N], mps, tensorrt, coreml, directml."),
        click.option(
            "--backend",
            type=click.Choice(["auto", "onnxruntime", "torch"]),
            help="Inference engine (default auto: ONNX Runtime, or PyTorch when it has a CUDA GPU that ONNX Runtime lacks).",
        ),
        click.option("--threads", type=int, help="ONNX Runtime threads (0 = all cores)."),
        click.option(
            "--recognizer", type=click.Choice(["fast", "exact"]), help="Face recognizer: fast (int8, default) or exact (float32)."
        ),
        click.option(
            "--shots-from", "cut_list", type=click.Path(dir_okay=False), help="Cut list from the editor (EDL, OTIO, CSV of timecodes)."
        ),
    ]
    return functools.reduce(lambda acc, o: o(acc), reversed(opts), f)


def render_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--mode", type=click.Choice(sorted(ANONYMIZERS)), help="Anonymizer (default blur)."),
        click.option("--shape", type=click.Choice(["ellipse", "box"]), help="Region shape (default ellipse)."),
        click.option(
            "--region",
            type=click.Choice(["head", "face"]),
            help="Cover the whole head, hair and ears included (default; face for --mode cloak), or the face only.",
        ),
        click.option("--padding", type=float, help="Extra margin around each face, fraction of its size (default 0.25)."),
        click.option("--feather", type=float, help="Soft edge width outside the covered area, fraction (default 0.15)."),
        click.option("--color", callback=_color, help="Solid mode colour: R,G,B, #rrggbb or a name."),
        click.option("--blocks", type=int, help="Pixelate: blocks across the face (default 8, at most 10: finer ones stay recognizable)."),
        click.option("--strength", type=float, help="Blur strength multiplier (default 1)."),
    ]
    return functools.reduce(lambda acc, o: o(acc), reversed(opts), f)


def selection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--keep", multiple=True, type=click.Path(dir_okay=False), help="Photo of a person NOT to anonymize (repeatable)."),
        click.option(
            "--only", multiple=True, type=click.Path(dir_okay=False), help="Anonymize only the people in these photos (repeatable)."
        ),
        click.option("--keep-identity", multiple=True, type=int, help="Identity id from the plan not to anonymize (repeatable)."),
        click.option("--only-identity", multiple=True, type=int, help="Anonymize only these identity ids (repeatable)."),
    ]
    return functools.reduce(lambda acc, o: o(acc), reversed(opts), f)


def _selection(opts: dict[str, Any]) -> Any:
    from .identities import load_selection

    return load_selection(opts.pop("keep", ()), opts.pop("only", ()), opts.pop("keep_identity", ()), opts.pop("only_identity", ()))


def encode_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--codec", help="Video codec: the input's by default; h264, hevc, prores, dnxhr, ..."),
        click.option("--crf", type=int, help="Quality for x264/x265/vp9 (default 18 for H.264)."),
        click.option("--preset", help="Encoder preset, e.g. veryfast, medium, slow."),
        click.option("--force", is_flag=True, default=None, help="Overwrite an existing output."),
        click.option(
            "--keep-metadata",
            is_flag=True,
            default=None,
            help="Copy every tag, subtitle, data stream, chapter and attachment (default: only what playback and editing need).",
        ),
        click.option(
            "--progress",
            "progress_kind",
            type=click.Choice(["bar", "json", "none"]),
            default="bar",
            show_default=True,
            help="Progress display; json is one object per line (for plugins).",
        ),
    ]
    return functools.reduce(lambda acc, o: o(acc), reversed(opts), f)


def _set_verbosity(ctx: click.Context, param: click.Parameter, value: int | bool) -> None:
    """-v/-q work before or after the command name; the last one given wins."""
    if not value and ctx.meta.get("deid_verbosity_set"):
        return
    verbose = value if param.name == "verbose" else 0
    quiet = bool(value) if param.name == "quiet" else False
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(int(verbose), 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("deid-edit: %(levelname)s: %(message)s"))
    root = logging.getLogger("deid_edit")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if value:
        ctx.meta["deid_verbosity_set"] = True


def verbosity_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_verbosity, help="Only errors.")(f)
    return click.option("-v", "--verbose", count=True, expose_value=False, callback=_set_verbosity, help="More log output (-vv: debug).")(f)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="deid-edit")
@verbosity_options
def cli() -> None:
    """Find every face in a video and anonymize it: blur, pixelate, solid, matte."""


def _finish(progress: ProgressSink, kind: str, output: Path, line: str | None = None, **extra: Any) -> None:
    """The "done" event (json) or one closing line on stdout: ``line`` when given, else the path."""
    progress.event("done", output=str(output), **extra)
    if kind != "json":
        click.echo(line or str(output))


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def result_line(plan: Any, output: Path, mode: str, photo: bool = False) -> str:
    """What a run did, in one line: faces found, tracks, what stays visible, and the output path."""
    kept_ids = [i for i in plan.identities if i.action == "keep"]
    kept = sum(len(i.track_ids) for i in kept_ids)
    if photo:
        found = f"{_count(len(plan.tracks), 'face')} found"
        visible = f"{kept} kept visible"
    else:
        found = f"{_count(len(plan.identities), 'face')} found ({_count(len(plan.tracks), 'track')})"
        visible = f"{_count(kept, 'track')} kept visible"
    if mode in REVIEW_MODES:
        visible = f"ALL faces left visible (--mode {mode}, for review only)"
    return f"{found}, {visible}: {output}"


REVIEW_MODES = ("debug",)  # render modes that leave faces visible


def _warn_review_mode(mode: str | None) -> None:
    """Say before any work that this mode hides nobody (its output must never be published)."""
    if mode in REVIEW_MODES:
        click.echo(
            f"deid-edit: WARNING: --mode {mode} leaves every face visible (boxes drawn for review); do not publish its output",
            err=True,
        )


@cli.command()
@click.argument("video", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output video (default VIDEO.anon.EXT).")
@click.option("--save-plan", type=click.Path(path_type=Path), help="Also write the plan here.")
@click.option(
    "--otio",
    "otio_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a timeline of the output over the original (disabled): .otio for Resolve/Kdenlive, .xml (FCP 7 XML) for Premiere.",
)
@analyze_options
@render_options
@selection_options
@encode_options
@verbosity_options
def run(video: Path, output: Path | None, save_plan: Path | None, otio_path: Path | None, progress_kind: str, **opts: Any) -> None:
    """Analyze and anonymize VIDEO (or a photo: JPEG, PNG, WebP, TIFF, HEIC) in one go."""
    from .photo import is_photo
    from .pipeline import run as run_pipeline

    selection = _selection(opts)
    acfg = AnalyzeConfig.from_options(**opts)
    rcfg, ecfg = render_config(**opts), encode_config(**opts)
    _warn_review_mode(rcfg.mode)
    if is_photo(video):
        if otio_path or save_plan:
            raise click.UsageError("--otio and --save-plan are for videos; a photo is anonymized in one go")
        _run_photo(video, output or sidecars.default_output(video), acfg, rcfg, ecfg, selection, progress_kind)
        return
    if otio_path:
        _check_otio(otio_path, ecfg.force, video, output or sidecars.default_output(video))
    progress = make_progress(progress_kind)
    heard: dict[str, Any] = {}
    out, plan = run_pipeline(
        video,
        output,
        acfg,
        rcfg,
        ecfg,
        progress,
        plan_out=save_plan,
        selection=selection,
        on_selection=lambda p, r: heard.update(plan=p, report=r),
        reuse_plan=sidecars.plan_path(video),
    )
    extra = _write_otio(otio_path, video, out, plan, rcfg.mode, save_plan, ecfg.force)
    extra.update(_tell_kept(video, out, heard, selection, progress, progress_kind))
    removed = _tell_metadata(video, ecfg.keep_metadata, progress_kind)
    kept = sum(1 for i in plan.identities if i.action == "keep")
    _echo_otio(progress_kind, extra)
    line = result_line(plan, out, rcfg.mode)
    done = {"faces": len(plan.identities), "tracks": len(plan.tracks), "kept": kept, "frames": plan.frame_count}
    _finish(progress, progress_kind, out, line, **done, metadata_removed=removed, **extra)


def _run_photo(photo: Path, out: Path, acfg: Any, rcfg: Any, ecfg: Any, selection: Any, progress_kind: str) -> None:
    """``run`` on a still photo: the same modes, selection and reports as a video."""
    from .photo import run_photo

    progress = make_progress(progress_kind)
    heard: dict[str, Any] = {}
    out, plan, _ = run_photo(photo, out, acfg, rcfg, ecfg, selection, on_selection=lambda p, r: heard.update(plan=p, report=r))
    extra = _tell_kept(photo, out, heard, selection, progress, progress_kind, sheet=False)
    removed = _tell_metadata(photo, ecfg.keep_metadata, progress_kind)  # after the run: an unreadable photo fails there, clearly
    kept = sum(1 for i in plan.identities if i.action == "keep")
    line = result_line(plan, out, rcfg.mode, photo=True)
    _finish(progress, progress_kind, out, line, faces=len(plan.tracks), kept=kept, frames=1, metadata_removed=removed, **extra)


def _tell_metadata(video: Path, kept: bool, kind: str) -> list[str]:
    """One line: what of the source's metadata (a video's tags and streams, a photo's EXIF, XMP
    and text) the output leaves out, or that all was copied; returns it for the "done" event."""
    import av

    from .io.metadata import removed_by_default
    from .photo import is_photo, photo_metadata

    try:
        removed = photo_metadata(video) if is_photo(video) else removed_by_default(video)
    except (OSError, av.FFmpegError) as exc:  # the render is done; only the report is missing
        log.warning("%s: cannot list its metadata (%s)", video, exc)
        return []
    if kind == "json":
        return [] if kept else removed
    if kept:
        line = f"metadata: copied as in the source (--keep-metadata){': ' + ', '.join(removed) if removed else ''}"
    elif removed:
        line = f"metadata removed ({len(removed)}): {', '.join(removed)}"
    else:
        line = "metadata: nothing identifying in the source"
    click.echo(line, err=True)
    return [] if kept else removed


def _tell_kept(
    video: Path, out: Path, heard: dict[str, Any], selection: Any, progress: ProgressSink, kind: str, sheet: bool = True
) -> dict[str, str]:
    """After a render with --keep/--only: say who stays visible and (for a video) write
    OUT.kept.png; a photo shows them itself."""
    if "report" not in heard:
        return {}
    from .faces import kept_lines, write_kept_sheet

    plan, report = heard["plan"], heard["report"]
    path = write_kept_sheet(video, plan, report.kept_tracks(), sidecars.kept_sheet_path(out)) if sheet else None
    lines = kept_lines(plan, report, selection.keep_photos or selection.only_photos)
    if kind == "json":
        extra = {"sheet": str(path)} if path else {}
        progress.event("kept", tracks=list(report.kept_tracks()), identities=list(report.kept), lines=lines, **extra)
    else:
        for line in lines:
            click.echo(line, err=True)
        if path:
            click.echo(f"  faces left visible: {path}", err=True)
    return {"kept_sheet": str(path)} if path else {}


def _check_otio(otio_path: Path, force: bool, *videos: Path) -> None:
    """Refuse an unusable or existing timeline path before the long analysis and render."""
    from .otio import check_timeline_output

    check_timeline_output(otio_path, force, protect=videos)


def _write_otio(
    otio_path: Path | None, video: Path, out: Path, plan: Any, mode: str, plan_path: Path | None, force: bool
) -> dict[str, str]:
    """Write the timeline of one render; returns the extra fields of the 'done' event."""
    if not otio_path:
        return {}
    from .otio import build_timeline, render_source, write_timeline

    timeline = build_timeline([render_source(video, out, plan, mode, plan_path)], out.stem)
    return {"otio": str(write_timeline(timeline, otio_path, force))}


def _echo_otio(progress_kind: str, extra: dict[str, str]) -> None:
    """People see the timeline's path on its own line, before the closing line (json mode has it in 'done')."""
    if "otio" in extra and progress_kind != "json":
        click.echo(extra["otio"])


@cli.command()
@click.argument("video", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Plan file (default VIDEO.deid.json).")
@click.option("--force", is_flag=True, help="Overwrite an existing plan.")
@click.option("--progress", "progress_kind", type=click.Choice(["bar", "json", "none"]), default="bar", show_default=True)
@analyze_options
@verbosity_options
def analyze(video: Path, output: Path | None, force: bool, progress_kind: str, **opts: Any) -> None:
    """Find faces, shots and tracks in VIDEO and write the plan."""
    from .errors import EncodeError
    from .pipeline import analyze as analyze_pipeline
    from .plan import save_plan

    out = output or sidecars.plan_path(video)
    if out.exists() and not force:
        raise EncodeError(f"{out}: already exists; use --force to overwrite it or choose another name")
    acfg = AnalyzeConfig.from_options(**opts)
    progress = make_progress(progress_kind)
    plan = analyze_pipeline(video, acfg, progress)
    save_plan(plan, out)
    _finish(progress, progress_kind, out, faces=len(plan.identities), frames=plan.frame_count)


@cli.command()
@click.argument("video", type=click.Path(path_type=Path))
@click.option("--plan", "plan_path", type=click.Path(path_type=Path), help="Plan file (default VIDEO.deid.json).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output video (default VIDEO.anon.EXT).")
@click.option(
    "--otio",
    "otio_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a timeline of the output over the original (disabled): .otio for Resolve/Kdenlive, .xml (FCP 7 XML) for Premiere.",
)
@render_options
@click.option("--device", help="For --mode cloak: auto, cpu, cuda[:N], mps, tensorrt, coreml, directml.")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "torch"]), help="For --mode cloak: inference engine (default auto).")
@selection_options
@encode_options
@verbosity_options
def render(video: Path, plan_path: Path | None, output: Path | None, otio_path: Path | None, progress_kind: str, **opts: Any) -> None:
    """Anonymize VIDEO following a plan made by 'analyze'."""
    from .pipeline import render as render_pipeline
    from .plan import load_plan

    selection = _selection(opts)
    rcfg, ecfg = render_config(**opts), encode_config(**opts)
    _warn_review_mode(rcfg.mode)
    plan_file = plan_path or sidecars.plan_path(video)
    out = output or sidecars.default_output(video)
    if otio_path:
        _check_otio(otio_path, ecfg.force, video, out)
    progress = make_progress(progress_kind)
    heard: dict[str, Any] = {}
    plan = load_plan(plan_file)  # read once: the render follows it, the markers and the closing line report it
    out = render_pipeline(video, plan, out, rcfg, ecfg, progress, selection, on_selection=lambda p, r: heard.update(plan=p, report=r))
    extra: dict[str, str] = {}
    plan = heard.get("plan") or plan  # with --keep/--only: the plan as this render applied it
    if otio_path:
        extra = _write_otio(otio_path, video, out, plan, rcfg.mode, plan_file, ecfg.force)
    extra.update(_tell_kept(video, out, heard, selection, progress, progress_kind))
    removed = _tell_metadata(video, ecfg.keep_metadata, progress_kind)
    _echo_otio(progress_kind, extra)
    _finish(progress, progress_kind, out, result_line(plan, out, rcfg.mode), metadata_removed=removed, **extra)


@cli.command("otio")
@click.argument("plans", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Timeline file: .otio (OpenTimelineIO: Resolve, Kdenlive) or .xml (FCP 7 XML: Premiere).",
)
@click.option(
    "--media",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Anonymized video of each PLAN, in order (repeatable; default VIDEO.anon.EXT beside each source).",
)
@click.option(
    "--matte",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Matte render of each PLAN, in order, put (disabled) between the originals and the renders (repeatable).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing timeline.")
@click.option("--progress", "progress_kind", type=click.Choice(["bar", "json", "none"]), default="bar", show_default=True)
@verbosity_options
def otio_command(
    plans: tuple[Path, ...], output: Path, media: tuple[Path, ...], matte: tuple[Path, ...], force: bool, progress_kind: str
) -> None:
    """Write a timeline of the anonymized renders of PLANS, one after another, over their originals.

    Import the .otio in Resolve (File > Import > Timeline) or Kdenlive, the .xml in Premiere (File >
    Import). V1 holds the originals, disabled; the renders above cover them frame for frame, with a
    marker per person; the .otio also carries the provenance in metadata.
    """
    from .otio import build_timeline, check_timeline_output, sources_from_plans, write_timeline

    check_timeline_output(output, force, flag="-o")
    items = sources_from_plans(plans, media, matte)
    progress = make_progress(progress_kind)
    out = write_timeline(build_timeline(items, output.stem), output, force, flag="-o")
    _finish(progress, progress_kind, out, clips=len(items))


NOT_VIDEO_LINES = 10  # the rest of a folder's sidecar files are in the summary, not the terminal


@cli.command()
@click.argument("in_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder (tree mirrored).")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True, help="Files processed in parallel.")
@analyze_options
@render_options
@selection_options
@encode_options
@verbosity_options
def batch(in_dir: Path, out_dir: Path, jobs: int, progress_kind: str, **opts: Any) -> None:
    """Anonymize every video under IN_DIR into OUT_DIR; resumable; writes a summary.

    --keep/--only photos apply to every file, decided per track as in 'run'; each output with a
    selection gets OUT.kept.png and its kept tracks in the summary."""
    from .folder_batch import BATCH_STATUSES, SUMMARY
    from .folder_batch import batch as batch_pipeline

    if opts.get("keep_identity") or opts.get("only_identity"):
        raise click.UsageError("--keep-identity/--only-identity name identities of one plan; in a batch use --keep/--only photos")
    selection = _selection(opts)
    acfg = AnalyzeConfig.from_options(**opts)
    rcfg, ecfg = render_config(**opts), encode_config(**opts)
    _warn_review_mode(rcfg.mode)
    items = batch_pipeline(
        in_dir, out_dir, acfg, rcfg, ecfg, jobs, progress_for=lambda p: make_progress(progress_kind, file=str(p)), selection=selection
    )
    failed = [i for i in items if i.status == "failed"]
    counts = {s: sum(1 for i in items if i.status == s) for s in BATCH_STATUSES}
    summary = out_dir / f"{SUMMARY}.json"
    if progress_kind == "json":
        by_status = {k.replace(" ", "_"): v for k, v in counts.items()}
        JsonProgress().event("done", output=str(out_dir), summary=str(summary), files=len(items), **by_status)
    else:
        click.echo(
            f"{len(items)} files: {counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed, "
            f"{counts['not a video']} not videos; summary: {summary}"
        )
        others = [i for i in items if i.status == "not a video"]
        for item in others[:NOT_VIDEO_LINES]:
            click.echo(f"not a video: {item.file} ({item.error})")
        if len(others) > NOT_VIDEO_LINES:
            click.echo(f"... and {len(others) - NOT_VIDEO_LINES} more not-video files, listed in the summary")
    for item in failed:
        click.echo(f"deid-edit: failed: {item.error}", err=True)
    if failed:
        sys.exit(1)


@cli.command()
@click.argument("video", type=click.Path(path_type=Path))
@click.option(
    "--plan", "plan_path", type=click.Path(path_type=Path), help="Plan file (default VIDEO.deid.json if present, else analyze now)."
)
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), help="Folder for the contact sheet (default VIDEO.faces/).")
@click.option("--per-row", type=int, default=12, show_default=True, help="Thumbnails per identity row (one per track).")
@click.option("--thumb", type=int, default=112, show_default=True, help="Thumbnail size in pixels.")
@click.option("--progress", "progress_kind", type=click.Choice(["bar", "json", "none"]), default="bar", show_default=True)
@verbosity_options
def faces(video: Path, plan_path: Path | None, out_dir: Path | None, per_row: int, thumb: int, progress_kind: str) -> None:
    """List every identity found (screen time, shots, first appearance) and write a contact sheet."""
    from .faces import format_table, write_contact_sheet
    from .pipeline import analyze as analyze_pipeline
    from .plan import load_plan

    progress = make_progress(progress_kind)
    default_plan = sidecars.plan_path(video)
    from .photo import is_photo

    if is_photo(video) and not plan_path:  # a photo: its faces as the run would see them
        import tempfile

        from .photo import photo_plan, upright_copy

        with tempfile.TemporaryDirectory() as tmp:
            upright = upright_copy(video, Path(tmp) / "photo.png")
            from .photo import load_photo

            plan = photo_plan(upright, load_photo(upright)[0], AnalyzeConfig())
            sheet, summaries = write_contact_sheet(
                upright, plan, out_dir or sidecars.faces_dir(video), per_row=per_row, thumb=thumb
            )
        if progress_kind != "json":
            click.echo(format_table(summaries))
        _finish(progress, progress_kind, sheet, faces=len(summaries))
        return
    if plan_path or default_plan.is_file():
        plan = load_plan(plan_path or default_plan)
    else:
        from .plan import save_plan

        plan = analyze_pipeline(video, None, progress)
        save_plan(plan, default_plan)  # 'run' and 'render' reuse it: no second analysis
        if progress_kind != "json":
            click.echo(f"plan saved: {default_plan} ('deid-edit run' reuses it; --keep-identity N names its identities)", err=True)
    sheet, summaries = write_contact_sheet(video, plan, out_dir or sidecars.faces_dir(video), per_row=per_row, thumb=thumb)
    if progress_kind != "json":
        click.echo(format_table(summaries))
    _finish(progress, progress_kind, sheet, faces=len(summaries))


@cli.command()
@click.argument("original", type=click.Path(path_type=Path))
@click.argument("anonymized", type=click.Path(path_type=Path))
@click.option("--plan", "plan_path", type=click.Path(path_type=Path), help="Plan of the render: faces of kept identities are not counted.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write the report as JSON here.")
@click.option("--threshold", type=float, help="Descriptor distance under which a face still matches (default 0.6).")
@click.option(
    "--sheet",
    type=click.Path(dir_okay=False, path_type=Path),
    help="PNG of the heads the copy leaves uncovered, for a person to check (default ANONYMIZED.audit.png, only when there are any).",
)
@click.option("--progress", "progress_kind", type=click.Choice(["bar", "json", "none"]), default="bar", show_default=True)
@verbosity_options
def audit(
    original: Path,
    anonymized: Path,
    plan_path: Path | None,
    json_out: Path | None,
    threshold: float | None,
    sheet: Path | None,
    progress_kind: str,
) -> None:
    """Check that no face of ORIGINAL is still recognizable in ANONYMIZED and that no head was left
    uncovered (exit 3 if one is). Refuses two files that are not an original and its copy."""
    import json

    from .audit import audit as run_audit
    from .plan import load_plan

    progress = make_progress(progress_kind)
    plan = load_plan(plan_path) if plan_path else None
    kwargs = {"threshold": threshold} if threshold is not None else {}
    sheet = sheet or sidecars.audit_sheet_path(anonymized)
    from .photo import is_photo, photo_metadata, upright_copy

    if is_photo(original) and is_photo(anonymized):  # compared as viewers see them (EXIF orientation applied)
        import tempfile
        from dataclasses import replace

        with tempfile.TemporaryDirectory() as tmp:
            a, b = upright_copy(original, Path(tmp) / "original.png"), upright_copy(anonymized, Path(tmp) / "anonymized.png")
            report = run_audit(a, b, plan=plan, progress=progress, sheet=sheet, **kwargs)
        report = replace(report, original=str(original), anonymized=str(anonymized), metadata=tuple(photo_metadata(anonymized)))
    else:
        report = run_audit(original, anonymized, plan=plan, progress=progress, sheet=sheet, **kwargs)
    if json_out:
        json_out.write_text(json.dumps(report.to_json(), indent=1))
    if progress_kind == "json":
        progress.event("done", output=str(json_out or ""), ok=report.ok, leaks=len(report.leaks), face_frames=report.face_frames)
    else:
        click.echo(report.summary())
    if not report.ok:
        sys.exit(3)


@cli.group()
def models() -> None:
    """List or verify the bundled models."""


@models.command("list")
def models_list() -> None:
    """Show each model with its file, licence and source."""
    from .models import manifest, models_dir

    for name, entry in sorted(manifest().items()):
        click.echo(f"{name}: {models_dir() / entry['file']} ({entry.get('licence', '?')}) - {entry.get('task', '')}")


@models.command("verify")
def models_verify() -> None:
    """Check every model file against its sha256 in the manifest."""
    from .models import verify_all

    bad = 0
    for name, path, ok in verify_all():
        click.echo(f"{'ok' if ok else 'BAD'}  {name}  {path}")
        bad += not ok
    if bad:
        sys.exit(1)


@cli.command("extract-faces")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Dataset folder to write.")
@click.option(
    "--holdout-people",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Folder of photos of people never to train on: its files are skipped and matching faces dropped (repeatable).",
)
@click.option("--every", type=click.IntRange(1), default=10, show_default=True, help="Video: use every Nth frame.")
@click.option("--min-face", type=click.IntRange(8), default=64, show_default=True, help="Smallest face box side kept, in pixels.")
@click.option("--threshold", type=click.FloatRange(0.01, 0.99), default=0.5, show_default=True, help="Detection score threshold.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda[:N], ...")
@click.option("--force", is_flag=True, help="Replace an existing dataset folder.")
@verbosity_options
def extract_faces_command(
    sources: tuple[Path, ...],
    out_dir: Path,
    holdout_people: tuple[Path, ...],
    every: int,
    min_face: int,
    threshold: float,
    device: str,
    force: bool,
) -> None:
    """Cut aligned face chips out of photos and videos (SOURCES: files or folders) for train-cloak.

    LFW people (NAME/NAME_0001.jpg) in a fixed 10% are held out, as is everyone in --holdout-people.
    """
    from .generator.extract import extract_faces

    report = extract_faces(
        sources, out_dir, holdout_people, every=every, min_face=min_face, threshold=threshold, device=device, force=force
    )
    click.echo(
        f"{report.chips} chips from {report.sources} files into {out_dir} ({report.no_face} without a usable face; held out: "
        f"{len(report.held_out_lfw)} LFW people, {report.held_out_files} files, {report.held_out_matches} matching faces)"
    )


@cli.command("train-cloak")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", "run_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run folder.")
@click.option("--steps", type=click.IntRange(1), help="Total steps of the run (default 20000).")
@click.option("--batch", type=click.IntRange(1, 1024), help="Faces per step (default 16).")
@click.option("--lr", type=float, help="Generator learning rate (default 2e-4).")
@click.option("--lr-d", type=float, help="Discriminator learning rate (default 2e-4).")
@click.option("--seed", type=int, help="Seed of weights, batches and augmentation (default 0).")
@click.option("--checkpoint-every", type=click.IntRange(1), help="Steps between checkpoints (default 500).")
@click.option("--threads", type=click.IntRange(0), help="torch threads (0 = torch's default).")
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR from its checkpoint up to --steps.")
@click.option(
    "--loss-weight",
    "loss_weights",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a loss weight of a new run: attract, repel, margin, recon, mask_l1, mask_tv, adv, landmarks (repeatable).",
)
@click.option(
    "--init-from",
    "init",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Start a new run from the generator/discriminator weights of another run folder (step 0, this run's loss weights).",
)
@verbosity_options
def train_cloak_command(data_dir: Path, run_dir: Path, resume: bool, loss_weights: tuple[str, ...], init: Path | None, **opts: Any) -> None:
    """Train the cloak generator on a dataset folder made by extract-faces (needs the [train] extra)."""
    from dataclasses import fields

    from .generator.train import LossWeights, TrainConfig, train

    values: dict[str, Any] = {k: v for k, v in opts.items() if v is not None}
    if loss_weights:
        known = {f.name for f in fields(LossWeights)}
        chosen: dict[str, float] = {}
        for item in loss_weights:
            name, _, value = item.partition("=")
            try:
                if name not in known:
                    raise ValueError(name)
                chosen[name] = float(value)
            except ValueError:
                hint = f"{item!r}: use NAME=VALUE with NAME one of {', '.join(sorted(known))}"
                raise click.BadParameter(hint, param_hint="--loss-weight") from None
        values["weights"] = LossWeights(**chosen)
    cfg = TrainConfig(**values)

    def report(step: int, record: dict[str, float]) -> None:
        if step % 50 == 0 or step == cfg.steps:
            click.echo(
                f"step {step}: total {record['total']:.4f} repel {record['repel']:.4f} id_distance {record['id_distance']:.3f} "
                f"mask {record['mask_mean']:.3f} ({record['seconds']:.2f} s/step)",
                err=True,
            )

    if init is not None and resume:
        raise click.BadParameter("a resumed run keeps its own weights; drop --init-from or --resume", param_hint="--init-from")
    trainer = train(data_dir, run_dir, cfg, resume=resume, on_step=report, init=init)
    click.echo(f"{run_dir} (step {trainer.step})")


@cli.command("export-cloak")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="ONNX file, e.g. models/cloak.onnx.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@verbosity_options
def export_cloak_command(run_dir: Path, output: Path, force: bool) -> None:
    """Export the trained cloak generator of RUN_DIR to ONNX (chip + descriptor in; cloaked chip + mask out)."""
    from .generator.export import export_run

    click.echo(str(export_run(run_dir, output, force)))


@cli.command()
@click.argument("output", type=click.Path(path_type=Path), default=Path("deid-edit-sample.mp4"))
def sample(output: Path) -> None:
    """Write the built-in sample clip (two public-domain faces, camera motion, a cut)."""
    from .sample import make_sample_clip

    make_sample_clip(output)
    click.echo(str(output))


def main(argv: list[str] | None = None) -> None:
    """Console entry point with the exit-code contract (0 ok, 1 error, 2 usage, 130 interrupted)."""
    debug = os.environ.get("DEID_EDIT_DEBUG") == "1"
    args = sys.argv[1:] if argv is None else argv
    # A process started in the background by a non-interactive shell, or by some GUI hosts, inherits
    # SIGINT as *ignored*, and Python then never raises KeyboardInterrupt: the editor plugins' Cancel
    # (SIGINT, then SIGKILL after a grace period) would leave a temp file behind. Always honour it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    json_mode = "json" in args and "--progress" in args
    try:
        cli.main(args=args, prog_name="deid-edit", standalone_mode=False)
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("deid-edit: interrupted; no partial output was left", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except DeidError as exc:
        if debug:
            raise
        if json_mode:
            JsonProgress().event("error", message=str(exc))
        click.echo(f"deid-edit: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        if debug:
            raise
        click.echo(f"deid-edit: internal error: {type(exc).__name__}: {exc} (set DEID_EDIT_DEBUG=1 for details)", err=True)
        sys.exit(1)
