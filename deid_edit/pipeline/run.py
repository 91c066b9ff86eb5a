"""run: analyze then render in one go, reusing a plan saved for the same file and settings.

Input: a video, the stage configs and an optional selection. Output: the anonymized video and the
plan it followed. Everything that can fail cheaply (output path, encoder, models, photos) fails
before the long analysis.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

from ..config import DEFAULT_LOOKAHEAD, AnalyzeConfig, EncodeConfig, RenderConfig
from ..detect import FaceDetector
from ..errors import DeidError, InputError
from ..identities import (
    Selection,
    select,
)
from ..io.codecs import check_codec
from ..io.decode import probe
from ..plan import Plan, load_plan, save_plan
from ..progress import ProgressSink
from ..render import get_anonymizer
from ..sidecars import default_output
from .analyze import analyze
from .render import check_output, render
from .selection import SelectionHook, apply_selection, selection_references
from .stream import run_streaming

log = logging.getLogger(__name__)


def reusable_plan(video: Path, path: str | os.PathLike[str], cfg: AnalyzeConfig) -> Plan | None:
    """The saved plan at ``path`` when it was made for ``video`` (size and fingerprint) with the
    same detection, shot, tracking and identity settings; None otherwise (analyze again)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        plan = load_plan(path)
        plan.check_video(probe(video))
    except DeidError as exc:
        log.info("%s: not reused (%s)", path, exc)
        return None
    wanted = json.loads(json.dumps(cfg.to_dict()))  # as stored: tuples are lists
    if any(plan.config[k] != wanted[k] for k in ("detect", "shots", "track", "identity")):
        log.info("%s: made with other analysis settings; analyzing again", path)
        return None
    log.info("%s: reusing this plan (same file, same settings)", path)
    return plan


def run(
    video: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    analyze_cfg: AnalyzeConfig | None = None,
    render_cfg: RenderConfig | None = None,
    encode_cfg: EncodeConfig | None = None,
    progress: ProgressSink | None = None,
    plan_out: str | os.PathLike[str] | None = None,
    detector: FaceDetector | None = None,
    selection: Selection | None = None,
    on_selection: SelectionHook | None = None,
    reuse_plan: str | os.PathLike[str] | None = None,
    lookahead: float = DEFAULT_LOOKAHEAD,
    two_pass: bool = False,
) -> tuple[Path, Plan]:
    """Analyze and render; returns the output path and the plan used.

    One decode feeds both (``pipeline.stream``, a window of ``lookahead`` seconds) unless the run
    needs the whole video first: ``two_pass``, a reusable plan, identity ids (``--keep-identity``,
    ``--only-identity``), ``--only`` photos (hiding a person hides every track linked to them,
    which needs the links across cuts) or ``--mode cloak`` (each track cloaked or blurred whole,
    decided from frames spread over it). ``reuse_plan``: a plan file (e.g. the one ``deid-edit
    faces`` saved) used instead of a second analysis when it was made for this very file with the
    same analysis settings."""
    video = Path(video)
    out = Path(output) if output else default_output(video)
    ecfg = encode_cfg or EncodeConfig()
    check_output(video, out, ecfg.force)  # fail before the long analysis
    check_codec(ecfg)  # an unknown encoder, or a hardware one without its driver, too
    anonymizer = get_anonymizer((render_cfg or RenderConfig()).mode)
    model_file = getattr(anonymizer, "model_file", None)
    if model_file is not None:
        model_file(render_cfg)  # and an anonymizer whose model is missing (cloak)
    acfg = analyze_cfg or AnalyzeConfig()
    refs = selection_references(selection, acfg.identity.recognizer)  # bad photos fail before the long analysis
    plan = reusable_plan(video, reuse_plan, acfg) if reuse_plan else None
    if plan is not None:  # the analysis is reused, never earlier choices: 'run' keeps only whom its flags name
        plan = replace(plan, identities=tuple(replace(i, action="anonymize") for i in plan.identities))
    if selection and (selection.keep_ids or selection.only_ids):
        if plan is None:  # ids of an analysis nobody has seen mean nothing
            raise InputError(
                f"{video}: --keep-identity/--only-identity name identities of a saved plan, and there is no plan "
                f"made for this file with these settings; run 'deid-edit faces {video}' first and choose from its sheet"
            )
        select(plan.identities, plan.tracks, replace(selection, keep_photos=(), only_photos=()), acfg.identity)  # unknown ids fail now
    needs_links = bool(selection and (selection.keep_ids or selection.only_ids or selection.only_photos))
    # cloak decides each track from frames spread over its whole length, before rendering it
    per_track = hasattr(anonymizer, "sample_frames")
    if plan is None and not two_pass and not needs_links and not per_track:
        out_path, plan = run_streaming(
            video, out, acfg, render_cfg, ecfg, progress, detector, selection, refs, on_selection, lookahead=lookahead
        )
        if plan_out:
            save_plan(plan, plan_out)
        return out_path, plan
    if plan is None:
        plan = analyze(video, analyze_cfg, progress, detector)
    plan, _ = apply_selection(plan, selection, acfg.identity, refs, on_selection)
    if plan_out:
        save_plan(plan, plan_out)
    return render(video, plan, out, render_cfg, ecfg, progress), plan
