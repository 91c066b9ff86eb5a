"""Who stays visible: --keep/--only photos and identity ids applied to a Plan.

Input: a plan and a ``Selection``. Output: the plan with each track's decision (``identities.select``)
and the report that says who stays visible. Photos are checked before any analysis starts.
Next stage: ``pipeline.render``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ..config import IdentityConfig
from ..identities import (
    Selection,
    SelectionReport,
    reference_descriptors,
    select,
)
from ..plan import Plan

log = logging.getLogger(__name__)


def selection_references(selection: Selection | None, recognizer: str = "fast") -> np.ndarray | None:
    """Descriptors of the --keep/--only photos (an unusable photo fails here, before any analysis),
    made by ``recognizer``: the one that made the plan's track descriptors."""
    photos = (selection.keep_photos or selection.only_photos) if selection else ()
    return reference_descriptors(photos, recognizer=recognizer) if photos else None


SelectionHook = Callable[[Plan, SelectionReport], None]


def apply_selection(
    plan: Plan,
    selection: Selection | None,
    cfg: IdentityConfig | None = None,
    refs: np.ndarray | None = None,
    on_selection: SelectionHook | None = None,
) -> tuple[Plan, SelectionReport | None]:
    """The plan with --keep/--only (photos or ids) decided per track, failing closed
    (``identities.select``); ``on_selection`` hears what stays visible."""
    if not selection:
        return plan, None
    cfg = cfg or IdentityConfig()
    if refs is None:
        refs = selection_references(selection, plan.recognizer)
    identities, report = select(plan.identities, plan.tracks, selection, cfg, refs)
    photos = selection.keep_photos or selection.only_photos
    for p in report.unmatched_photos:
        log.warning(
            "%s: matches no face in the video (closest %.2f, a match needs < %.2f)%s",
            photos[p],
            report.closest[p],
            cfg.keep_threshold if selection.keep_photos else cfg.only_threshold,
            "; nobody is kept by it" if selection.keep_photos else "",
        )
    log.info("kept tracks %s of identities %s", report.kept_tracks(), report.kept)
    plan = replace(plan, identities=tuple(identities))
    if on_selection is not None:
        on_selection(plan, report)
    return plan, report
