"""Small files (plans, timelines, contact sheets) written atomically: a temporary file beside the
target, renamed over it only when complete, so an interrupted write never leaves a half file at
the final path. (Videos have their own temp-and-rename in ``encode.VideoWriter``.)"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DeidError


def write_atomic(path: Path, data: bytes | str, error: type[DeidError], what: str, advice: str, make_parent: bool = False) -> None:
    """Write ``data`` (str as UTF-8) to ``path`` atomically; on failure remove the temporary file
    and raise ``error`` with one line: ``PATH: cannot write WHAT (reason); ADVICE``."""
    tmp = path.with_name(f".{path.name}.part")
    try:
        if make_parent:
            path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        label = f" {what}" if what else ""
        raise error(f"{path}: cannot write{label} ({exc.strerror}); {advice}") from exc
