"""deid-edit: face de-identification for video (journalists, editors, newsrooms).

Public API: ``analyze`` (video -> Plan), ``render`` (video + Plan -> anonymized video), ``run``
(both), ``batch`` (a folder tree), ``load_plan`` / ``save_plan``.
"""

__version__ = "0.1.0"

from .pipeline import analyze, batch, render, run  # noqa: E402
from .plan import Plan, load_plan, save_plan  # noqa: E402

__all__ = ["Plan", "__version__", "analyze", "batch", "load_plan", "render", "run", "save_plan"]
