"""Who was found: per-identity summaries from the plan (``summary``) and their pictures (``sheet``).

``deid-edit faces`` prints ``format_table`` and writes ``write_contact_sheet``; ``run``/``render`` print
``kept_lines`` and write ``write_kept_sheet``; OTIO markers use ``summarize``.
"""

from .sheet import (
    ANON_COLOR,
    KEEP_COLOR,
    LARGE_THUMB,
    ROWS_PER_PAGE,
    SheetLayout,
    face_crop,
    viewable,
    with_thumbnails,
    write_contact_sheet,
    write_kept_sheet,
)
from .summary import (
    BEST_PER_IDENTITY,
    UNASSIGNED,
    IdentitySummary,
    choose_best,
    format_table,
    frame_duration,
    kept_lines,
    summarize,
)

__all__ = [
    "ANON_COLOR",
    "BEST_PER_IDENTITY",
    "KEEP_COLOR",
    "LARGE_THUMB",
    "ROWS_PER_PAGE",
    "UNASSIGNED",
    "IdentitySummary",
    "SheetLayout",
    "choose_best",
    "face_crop",
    "format_table",
    "frame_duration",
    "kept_lines",
    "summarize",
    "viewable",
    "with_thumbnails",
    "write_contact_sheet",
    "write_kept_sheet",
]
