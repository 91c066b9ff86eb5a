"""deid-edit: face de-identification for video (journalists, editors, newsrooms).

Public API: ``analyze`` (video -> Plan), ``render`` (video + Plan -> anonymized video), ``run``
(both), ``batch`` (a folder tree), ``load_plan`` / ``save_plan``.
"""

from ._version import __version__
from .folder_batch import batch
from .pipeline import analyze, render, run
from .plan import Plan, load_plan, save_plan

__all__ = ["Plan", "__version__", "analyze", "batch", "load_plan", "render", "run", "save_plan"]
