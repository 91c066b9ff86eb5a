"""The product commands: run, analyze, render, otio, batch, faces, audit, models, sample.

Input: videos, photos, plans and folders named on the command line. Output: what the pipeline
writes, and what a journalist must know about it (kept people, removed metadata, the closing
line). Each command builds its configs from the flags and calls one pipeline function.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from .. import sidecars
from ..config import DEFAULT_LOOKAHEAD, AnalyzeConfig, encode_config, render_config
from ..progress import JsonProgress, ProgressSink
from .common import (
    _finish,
    _selection,
    _warn_review_mode,
    analyze_options,
    cli,
    cluster_progress,
    encode_options,
    make_progress,
    render_options,
    result_line,
    selection_options,
    verbosity_options,
)

log = logging.getLogger("deid_edit")

# run and render both hand their output to an editor the same way
otio_option = click.option(
    "--otio",
    "otio_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write a timeline of the output over the original (disabled): .otio for Resolve/Kdenlive, .xml (FCP 7 XML) for Premiere.",
)


@cli.command()
@click.argument("video", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output video (default VIDEO.anon.EXT).")
@click.option("--save-plan", type=click.Path(path_type=Path), help="Also write the plan here.")
@click.option(
    "--lookahead",
    type=click.FloatRange(0.5, 600),
    default=DEFAULT_LOOKAHEAD,
    show_default=True,
    help="Seconds a frame may wait for the end of its shot before it is rendered (one decode; memory grows with it).",
)
@click.option(
    "--two-pass",
    is_flag=True,
    help="Analyze the whole video, then render (decodes twice). Also used with --keep-identity, --only-identity, --only or a saved plan.",
)
@otio_option
@analyze_options
@render_options
@selection_options
@encode_options
@verbosity_options
def run(
    video: Path,
    output: Path | None,
    save_plan: Path | None,
    lookahead: float,
    two_pass: bool,
    otio_path: Path | None,
    progress_kind: str,
    **opts: Any,
) -> None:
    """Analyze and anonymize VIDEO (or a photo: JPEG, PNG, WebP, TIFF, HEIC) in one go."""
    from ..photo import is_photo
    from ..pipeline import run as run_pipeline

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
        lookahead=lookahead,
        two_pass=two_pass,
    )
    extra = _write_otio(otio_path, video, out, plan, rcfg.mode, save_plan, ecfg.force)
    extra.update(_tell_kept(video, out, heard, selection, progress, progress_kind))
    removed = _tell_metadata(video, ecfg.keep_metadata, progress_kind)
    kept = sum(1 for i in plan.identities if i.action == "keep")
    _echo_otio(progress_kind, extra)
    line = result_line(plan, out, rcfg.mode)
    done = {"faces": len(plan.identities), "tracks": len(plan.tracks), "kept": kept, "frames": plan.frame_count}
    _finish(progress, progress_kind, out, line, **done, metadata_removed=removed, **extra)


@cli.command()
@click.argument("source")
@click.argument("dest")
@click.option(
    "--latency",
    type=click.FloatRange(0.2, 30),
    default=1.0,
    show_default=True,
    help="Seconds between a frame arriving and leaving: the tracker's look ahead (more covers faces better).",
)
@click.option(
    "--when-late",
    type=click.Choice(["blur", "drop"]),
    default="blur",
    show_default=True,
    help="A frame the analysis cannot reach in time is sent fully blurred, or dropped; never as it came.",
)
@click.option("--input-format", help="FFmpeg input format of SOURCE (v4l2, avfoundation, dshow); guessed otherwise.")
@click.option(
    "--idle-timeout", type=click.FloatRange(0.5, 600), default=5.0, show_default=True, help="Stop when SOURCE sends nothing this long."
)
@analyze_options
@render_options
@selection_options
@encode_options
@verbosity_options
def live(
    source: str, dest: str, latency: float, when_late: str, input_format: str | None, idle_timeout: float, progress_kind: str, **opts: Any
) -> None:
    """Anonymize live video at a fixed latency until SOURCE ends (or Ctrl-C).

    SOURCE: a camera (/dev/video0, avfoundation:0, dshow:video=NAME), a udp:// srt:// rtsp:// rtmp://
    URL, or a file (played at its own rate). DEST: a file (.ts, .mkv, .mp4) or a udp:// srt:// rtmp://
    URL. Identities across cuts need the whole video: use 'run' for files you can wait for."""
    from ..pipeline.live import live as live_pipeline
    from ..pipeline.selection import selection_references

    selection = _selection(opts)
    if selection and (selection.keep_ids or selection.only_ids or selection.only_photos):
        raise click.UsageError("live video can keep people by photo (--keep) only: identity ids and --only need the whole video")
    acfg = AnalyzeConfig.from_options(**opts)
    rcfg, ecfg = render_config(**opts), encode_config(**opts)
    _warn_review_mode(rcfg.mode)
    refs = selection_references(selection, acfg.identity.recognizer)
    progress = make_progress(progress_kind)
    stats = live_pipeline(
        source,
        dest,
        acfg,
        rcfg,
        ecfg,
        latency=latency,
        when_late=when_late,
        progress=progress,
        input_format=input_format,
        selection=selection,
        refs=refs,
        idle_timeout=idle_timeout,
    )
    _finish(progress, progress_kind, Path(dest), f"{stats.summary()}: {dest}", **stats.as_dict())


def _run_photo(photo: Path, out: Path, acfg: Any, rcfg: Any, ecfg: Any, selection: Any, progress_kind: str) -> None:
    """``run`` on a still photo: the same modes, selection and reports as a video."""
    from ..photo import run_photo

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

    from ..io.metadata import removed_by_default
    from ..photo import is_photo, photo_metadata

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
    from ..faces import kept_lines, write_kept_sheet

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
    from ..otio import check_timeline_output

    check_timeline_output(otio_path, force, protect=videos)


def _write_otio(
    otio_path: Path | None, video: Path, out: Path, plan: Any, mode: str, plan_path: Path | None, force: bool
) -> dict[str, str]:
    """Write the timeline of one render; returns the extra fields of the 'done' event."""
    if not otio_path:
        return {}
    from ..otio import build_timeline, render_source, write_timeline

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
    from ..errors import EncodeError
    from ..pipeline import analyze as analyze_pipeline
    from ..plan import save_plan

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
@otio_option
@render_options
@click.option("--device", help="For --mode cloak: auto, cpu, cuda[:N], mps, tensorrt, coreml, directml.")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime", "torch"]), help="For --mode cloak: inference engine (default auto).")
@selection_options
@encode_options
@verbosity_options
def render(video: Path, plan_path: Path | None, output: Path | None, otio_path: Path | None, progress_kind: str, **opts: Any) -> None:
    """Anonymize VIDEO following a plan made by 'analyze'."""
    from ..pipeline import render as render_pipeline
    from ..plan import load_plan

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
    from ..otio import build_timeline, check_timeline_output, sources_from_plans, write_timeline

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
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Run every file as a task on a Ray cluster: alone, a cluster started here; with an address "
    "(host:6379, ray://host:10001, auto), that cluster. IN_DIR and the output must be on storage every worker sees.",
)
@click.option("--cpus-per-task", type=click.FloatRange(0.1, 256), default=None, help="With --ray: CPUs a file's task asks for (default 1).")
@click.option(
    "--gpus-per-task",
    type=click.FloatRange(0, 16),
    default=None,
    help="With --ray: GPUs a file's task asks for (default 1 where the cluster has GPUs, else 0).",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 100),
    default=None,
    help="With --ray: times a file starts again after its worker died (killed, out of memory, machine lost; default 2).",
)
@analyze_options
@render_options
@selection_options
@encode_options
@verbosity_options
def batch(
    in_dir: Path,
    out_dir: Path,
    jobs: int,
    ray_address: str | None,
    cpus_per_task: float | None,
    gpus_per_task: float | None,
    retries: int | None,
    progress_kind: str,
    **opts: Any,
) -> None:
    """Anonymize every video under IN_DIR into OUT_DIR; resumable; writes a summary.

    --keep/--only photos apply to every file, decided per track as in 'run'; each output with a
    selection gets OUT.kept.png and its kept tracks in the summary. --ray spreads the files over a
    Ray cluster (pip install 'deid-edit[ray]'); put it after IN_DIR."""
    from ..folder_batch import BATCH_STATUSES, SUMMARY
    from ..folder_batch import batch as batch_pipeline

    if opts.get("keep_identity") or opts.get("only_identity"):
        raise click.UsageError("--keep-identity/--only-identity name identities of one plan; in a batch use --keep/--only photos")
    ray_only = {"cpus_per_task": cpus_per_task, "gpus_per_task": gpus_per_task, "retries": retries}  # None: not given
    if ray_address is None and any(v is not None for v in ray_only.values()):
        raise click.UsageError("--cpus-per-task, --gpus-per-task and --retries go with --ray")
    if ray_address is not None and jobs != 1:
        raise click.UsageError("with --ray the cluster's CPUs set how many files run at once; use --cpus-per-task, not --jobs")
    selection = _selection(opts)
    acfg = AnalyzeConfig.from_options(**opts)
    rcfg, ecfg = render_config(**opts), encode_config(**opts)
    _warn_review_mode(rcfg.mode)
    if ray_address is not None:
        from ..cluster import ClusterOptions, batch_ray

        given = {k: v for k, v in ray_only.items() if v is not None}  # the rest: ClusterOptions' defaults
        options = ClusterOptions(address=None if ray_address == "local" else ray_address, **given)
        with cluster_progress(progress_kind) as on_progress:
            items, report = batch_ray(in_dir, out_dir, acfg, rcfg, ecfg, options, selection, on_progress)
        log.info(
            "ray: started or joined in %.1f s, first file began %.1f s after submission, stopped in %.1f s; %g GPU per task; %s",
            report.startup_seconds,
            report.first_task_seconds,
            report.shutdown_seconds,
            report.gpus_per_task,
            ", ".join(f"worker {k}: {w['files']} files, {w['model_loads']} model loads" for k, w in report.workers.items()),
        )
    else:
        items = batch_pipeline(
            in_dir, out_dir, acfg, rcfg, ecfg, jobs, progress_for=lambda p: make_progress(progress_kind, file=str(p)), selection=selection
        )
    retried = [i for i in items if i.retried]
    failed = [i for i in items if i.status == "failed"]
    counts = {s: sum(1 for i in items if i.status == s) for s in BATCH_STATUSES}
    summary = out_dir / f"{SUMMARY}.json"
    if progress_kind == "json":
        by_status = {k.replace(" ", "_"): v for k, v in counts.items()}
        JsonProgress().event("done", output=str(out_dir), summary=str(summary), files=len(items), retried=len(retried), **by_status)
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
        for item in retried:
            click.echo(f"retried {item.retried}x after its worker died: {item.file} ({item.status})")
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
    from ..faces import format_table, write_contact_sheet
    from ..pipeline import analyze as analyze_pipeline
    from ..plan import load_plan

    progress = make_progress(progress_kind)
    default_plan = sidecars.plan_path(video)
    from ..photo import is_photo

    if is_photo(video) and not plan_path:  # a photo: its faces as the run would see them
        import tempfile

        from ..photo import photo_plan, upright_copy

        with tempfile.TemporaryDirectory() as tmp:
            upright = upright_copy(video, Path(tmp) / "photo.png")
            from ..photo import load_photo

            plan = photo_plan(upright, load_photo(upright)[0], AnalyzeConfig())
            sheet, summaries = write_contact_sheet(upright, plan, out_dir or sidecars.faces_dir(video), per_row=per_row, thumb=thumb)
        if progress_kind != "json":
            click.echo(format_table(summaries))
        _finish(progress, progress_kind, sheet, faces=len(summaries))
        return
    if plan_path or default_plan.is_file():
        plan = load_plan(plan_path or default_plan)
    else:
        from ..plan import save_plan

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

    from ..audit import audit as run_audit
    from ..plan import load_plan

    progress = make_progress(progress_kind)
    plan = load_plan(plan_path) if plan_path else None
    kwargs = {"threshold": threshold} if threshold is not None else {}
    sheet = sheet or sidecars.audit_sheet_path(anonymized)
    from ..photo import is_photo, photo_metadata, upright_copy

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
    from ..models import manifest, models_dir

    for name, entry in sorted(manifest().items()):
        click.echo(f"{name}: {models_dir() / entry['file']} ({entry.get('licence', '?')}) - {entry.get('task', '')}")


@models.command("verify")
def models_verify() -> None:
    """Check every model file against its sha256 in the manifest."""
    from ..models import verify_all

    bad = 0
    for name, path, ok in verify_all():
        click.echo(f"{'ok' if ok else 'BAD'}  {name}  {path}")
        bad += not ok
    if bad:
        sys.exit(1)


@cli.command()
@click.argument("output", type=click.Path(path_type=Path), default=Path("deid-edit-sample.mp4"))
def sample(output: Path) -> None:
    """Write the built-in sample clip (two public-domain faces, camera motion, a cut)."""
    from ..sample import make_sample_clip

    make_sample_clip(output)
    click.echo(str(output))
