"""The engine's entry points: ``analyze`` (video -> Plan), ``render`` (video + Plan -> anonymized
video) and ``run`` (both), with the selection (--keep/--only) between them.

``deid_edit.folder_batch`` runs ``run`` over a folder tree; ``deid_edit.photo`` does the same for
still photos. Each stage lives in its own module; this package names the public ones.
"""

from .analyze import SmallFaceSweep, analyze, track_detections, with_descriptor
from .render import check_output, render
from .run import reusable_plan, run
from .selection import apply_selection, selection_references
from .stream import beside_encoder

__all__ = [
    "SmallFaceSweep",
    "analyze",
    "apply_selection",
    "beside_encoder",
    "check_output",
    "render",
    "reusable_plan",
    "run",
    "selection_references",
    "track_detections",
    "with_descriptor",
]
