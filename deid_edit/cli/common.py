"""What every deid-edit command shares: the click group, option groups, progress, the closing line.

Input: the command line. Output: option dataclasses (``config.FLAGS`` routes each flag to its
stage), progress on stderr or as JSON lines, and one closing line per command. The only place that
imports click and tqdm with the rest of ``deid_edit.cli``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from .._version import __version__
from ..progress import JsonProgress, NullProgress, ProgressSink
from ..render import ANONYMIZERS

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


@contextlib.contextmanager
def cluster_progress(kind: str) -> Iterator[Callable[[dict[str, Any]], None]]:
    """The ``on_progress`` of a batch on Ray: a bar of files (done, failed, remaining, fps over the
    cluster), or ``{"stage": "batch", ...}`` JSON lines (about one a second, and after each file)."""
    state: dict[str, Any] = {"bar": None, "last": 0.0, "finished": 0}
    json_out = JsonProgress() if kind == "json" else None

    def on_progress(counts: dict[str, Any]) -> None:
        finished = counts["files"] - counts["remaining"]
        if json_out is not None:
            now = time.monotonic()
            if finished != state["finished"] or now - state["last"] >= 1.0 or not counts["remaining"]:
                state["last"], state["finished"] = now, finished
                json_out.event("batch", **counts)
            return
        if kind != "bar" or not sys.stderr.isatty():
            return
        from tqdm import tqdm

        bar = state["bar"]
        if bar is None:
            bar = state["bar"] = tqdm(total=counts["files"], desc="batch (ray)", unit="file", file=sys.stderr)
        bar.update(finished - bar.n)
        bar.set_postfix_str(
            f"{counts['done']} done, {counts['failed']} failed, {counts['remaining']} left, {counts['fps']:.1f} fps", refresh=False
        )
        bar.refresh()

    try:
        yield on_progress
    finally:
        if state["bar"] is not None:
            state["bar"].close()


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
            "0 = never, -1 = automatic (5 on the CPU, never on a GPU).",
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
        click.option("--threads", type=int, help="ONNX Runtime threads (0 = all cores; half while run also encodes)."),
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
    from ..identities import load_selection

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
