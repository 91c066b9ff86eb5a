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
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from . import __version__
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
        click.option("--device", help="auto, cpu, cuda[:N], tensorrt, coreml, directml."),
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
        click.option("--padding", type=float, help="Extra margin around each face, fraction of its size (default 0.25)."),
        click.option("--feather", type=float, help="Soft edge width outside the covered area, fraction (default 0.15)."),
        click.option("--color", callback=_color, help="Solid mode colour: R,G,B, #rrggbb or a name."),
        click.option("--blocks", type=int, help="Pixelate: blocks across the face (default 8)."),
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


def _finish(progress: ProgressSink, kind: str, output: Path, **extra: Any) -> None:
    progress.event("done", output=str(output), **extra)
    if kind != "json":
        click.echo(str(output))


@cli.command()
@click.argument("video", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Output video (default VIDEO.anon.EXT).")
@click.option("--save-plan", type=click.Path(path_type=Path), help="Also write the plan here.")
@analyze_options
@render_options
@selection_options
@encode_options
@verbosity_options
def run(video: Path, output: Path | None, save_plan: Path | None, progress_kind: str, **opts: Any) -> None:
    """Analyze and anonymize VIDEO in one go."""
    from .pipeline import run as run_pipeline

    selection = _selection(opts)
    acfg = AnalyzeConfig.from_options(**opts)
    rcfg, ecfg = render_config(**opts), encode_config(**opts)
    progress = make_progress(progress_kind)
    out, plan = run_pipeline(video, output, acfg, rcfg, ecfg, progress, plan_out=save_plan, selection=selection)
    kept = sum(1 for i in plan.identities if i.action == "keep")
    _finish(progress, progress_kind, out, faces=len(plan.identities), kept=kept, frames=plan.frame_count)


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

    out = output or video.with_name(video.name + ".deid.json")
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
@render_options
@selection_options
@encode_options
@verbosity_options
def render(video: Path, plan_path: Path | None, output: Path | None, progress_kind: str, **opts: Any) -> None:
    """Anonymize VIDEO following a plan made by 'analyze'."""
    from .pipeline import default_output
    from .pipeline import render as render_pipeline

    selection = _selection(opts)
    rcfg, ecfg = render_config(**opts), encode_config(**opts)
    progress = make_progress(progress_kind)
    out = render_pipeline(
        video, plan_path or video.with_name(video.name + ".deid.json"), output or default_output(video), rcfg, ecfg, progress, selection
    )
    _finish(progress, progress_kind, out)


@cli.command()
@click.argument("in_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out_dir", type=click.Path(path_type=Path), required=True, help="Output folder (tree mirrored).")
@click.option("--jobs", type=click.IntRange(1, 64), default=1, show_default=True, help="Files processed in parallel.")
@analyze_options
@render_options
@encode_options
@verbosity_options
def batch(in_dir: Path, out_dir: Path, jobs: int, progress_kind: str, **opts: Any) -> None:
    """Anonymize every video under IN_DIR into OUT_DIR; resumable; writes a summary."""
    from .pipeline import SUMMARY
    from .pipeline import batch as batch_pipeline

    acfg = AnalyzeConfig.from_options(**opts)
    rcfg, ecfg = render_config(**opts), encode_config(**opts)
    items = batch_pipeline(in_dir, out_dir, acfg, rcfg, ecfg, jobs, progress_for=lambda p: make_progress(progress_kind, file=str(p)))
    failed = [i for i in items if i.status == "failed"]
    counts = {s: sum(1 for i in items if i.status == s) for s in ("ok", "skipped", "failed")}
    summary = out_dir / f"{SUMMARY}.json"
    if progress_kind == "json":
        JsonProgress().event("done", output=str(out_dir), summary=str(summary), **counts)
    else:
        click.echo(f"{counts['ok']} done, {counts['skipped']} skipped, {counts['failed']} failed; summary: {summary}")
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
@click.option("--per-row", type=int, default=6, show_default=True, help="Thumbnails per identity row.")
@click.option("--thumb", type=int, default=112, show_default=True, help="Thumbnail size in pixels.")
@click.option("--progress", "progress_kind", type=click.Choice(["bar", "json", "none"]), default="bar", show_default=True)
@verbosity_options
def faces(video: Path, plan_path: Path | None, out_dir: Path | None, per_row: int, thumb: int, progress_kind: str) -> None:
    """List every identity found (screen time, shots, first appearance) and write a contact sheet."""
    from .faces import format_table, write_contact_sheet
    from .pipeline import analyze as analyze_pipeline
    from .plan import load_plan

    progress = make_progress(progress_kind)
    default_plan = video.with_name(video.name + ".deid.json")
    if plan_path or default_plan.is_file():
        plan = load_plan(plan_path or default_plan)
    else:
        plan = analyze_pipeline(video, None, progress)
    sheet, summaries = write_contact_sheet(video, plan, out_dir or video.with_name(video.stem + ".faces"), per_row=per_row, thumb=thumb)
    if progress_kind != "json":
        click.echo(format_table(summaries))
    _finish(progress, progress_kind, sheet, faces=len(summaries))


@cli.command()
@click.argument("original", type=click.Path(path_type=Path))
@click.argument("anonymized", type=click.Path(path_type=Path))
@click.option("--plan", "plan_path", type=click.Path(path_type=Path), help="Plan of the render: faces of kept identities are not counted.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Also write the report as JSON here.")
@click.option("--threshold", type=float, help="Descriptor distance under which a face still matches (default 0.6).")
@click.option("--progress", "progress_kind", type=click.Choice(["bar", "json", "none"]), default="bar", show_default=True)
@verbosity_options
def audit(
    original: Path, anonymized: Path, plan_path: Path | None, json_out: Path | None, threshold: float | None, progress_kind: str
) -> None:
    """Check that no face of ORIGINAL is still recognizable in ANONYMIZED (exit 3 if one is)."""
    import json

    from .audit import audit as run_audit
    from .plan import load_plan

    progress = make_progress(progress_kind)
    plan = load_plan(plan_path) if plan_path else None
    kwargs = {"threshold": threshold} if threshold is not None else {}
    report = run_audit(original, anonymized, plan=plan, progress=progress, **kwargs)
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
