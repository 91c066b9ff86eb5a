"""Names of the files deid-edit writes beside a video: plan, output, kept sheet, contact sheet, audit sheet.

Input: the path of a video (or of an output). Output: the path of its sidecar. One place, so the
CLI, batch, OTIO hand-off and plugins all look for a plan or an output where the others put it.
"""

from __future__ import annotations

from pathlib import Path

PLAN_SUFFIX = ".deid.json"


def plan_path(video: Path) -> Path:
    """``clip.mp4`` -> ``clip.mp4.deid.json``: the plan analyze writes and render, run and faces read."""
    return video.with_name(video.name + PLAN_SUFFIX)


def video_of_plan(plan: Path) -> Path | None:
    """``clip.mp4.deid.json`` -> ``clip.mp4``; None for a plan saved under another name."""
    return plan.with_name(plan.name[: -len(PLAN_SUFFIX)]) if plan.name.endswith(PLAN_SUFFIX) else None


def default_output(video: Path) -> Path:
    """``clip.mp4`` -> ``clip.anon.mp4`` beside the input."""
    return video.with_name(f"{video.stem}.anon{video.suffix}")


def kept_sheet_path(output: Path) -> Path:
    """``out.mp4`` -> ``out.mp4.kept.png``: who an output leaves visible (--keep/--only)."""
    return output.with_name(output.name + ".kept.png")


def faces_dir(video: Path) -> Path:
    """``clip.mp4`` -> ``clip.faces/``: the contact sheet of ``deid-edit faces``."""
    return video.with_name(video.stem + ".faces")


def audit_sheet_path(anonymized: Path) -> Path:
    """``out.mp4`` -> ``out.mp4.audit.png``: the heads an anonymized copy leaves uncovered."""
    return anonymized.with_name(anonymized.name + ".audit.png")
