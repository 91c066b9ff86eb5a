"""Batch: every file under a folder tree anonymized into a mirrored tree, with a summary row per file.

Input: a folder. Output: the mirrored tree of anonymized videos and photos (``pipeline.run``,
``photo.run_photo``) and ``deid-edit-summary.json``/``.csv``, one row per file with its status
(done, skipped, failed, not a video) and why. Content decides what a file is, not its name.
Previous stage: the CLI's ``batch``; it sits above ``pipeline`` and ``photo``, which never import it.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import av

from .config import AnalyzeConfig, EncodeConfig, RenderConfig
from .detect import FaceDetector, create_detector
from .errors import DeidError, InputError
from .faces import write_kept_sheet
from .identities import Selection, SelectionReport
from .io.codecs import OUTPUT_FORMATS
from .photo import is_photo, run_photo
from .pipeline import beside_encoder, run, selection_references
from .progress import ProgressSink
from .sidecars import kept_sheet_path

log = logging.getLogger(__name__)

IMAGE_FORMATS = {"image2", "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "gif", "svg_pipe"}
SUMMARY = "deid-edit-summary"


VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".avi", ".mxf", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".m2v"}
    | {".vob", ".3gp", ".3g2", ".wmv", ".asf", ".flv", ".dv", ".ogv", ".y4m"}
)
# leading bytes of the containers cameras, phones and edit suites write: such a file that FFmpeg
# cannot open is a damaged video (failed), not something else that happens to sit in the folder
_CONTAINER_MAGIC: tuple[tuple[int, bytes], ...] = (
    (4, b"ftyp"), (4, b"moov"), (4, b"mdat"), (4, b"wide"), (4, b"free"), (4, b"skip"),  # MP4, MOV, 3GP
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska, WebM
    (0, b"RIFF"),  # AVI
    (0, b"\x06\x0e\x2b\x34"),  # MXF
    (0, b"\x30\x26\xb2\x75"),  # ASF, WMV
    (0, b"FLV"), (0, b"OggS"), (0, b"\x00\x00\x01\xba"), (0, b"\x00\x00\x01\xb3"),  # FLV, Ogg, MPEG-PS/ES
)


def _looks_like_container(head: bytes) -> bool:
    if any(head[at : at + len(magic)] == magic for at, magic in _CONTAINER_MAGIC):
        return True
    return len(head) > 376 and head[0] == head[188] == head[376] == 0x47  # MPEG-TS sync bytes


def _is_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.start > len(head) - 4  # a multi-byte character cut by the read
    return True


def classify(path: Path) -> tuple[str, str]:
    """What a batch does with a file: ("photo" | "video" | "not a video" | "failed", reason).

    Content decides, not the name: a clip named ``.bin`` is a video; a text file named ``.mp4`` is
    not. A file that starts like a video container but cannot be opened (cut short by a failed
    copy, a damaged card) is "failed", never silently "not a video": it may hold a source's face.
    """
    if is_photo(path) and not path.name.startswith("."):
        return "photo", ""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError as exc:
        return "failed", f"{path}: cannot be read ({exc.strerror or exc}); check its permissions"
    if not head:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return "failed", f"{path}: is empty (0 bytes); re-copy it"
        return "not a video", "empty file"
    try:
        with av.open(str(path), metadata_errors="ignore") as c:
            if c.format.name in IMAGE_FORMATS:
                return "not a video", f"a still image ({c.format.name}) of a format deid-edit does not write"
            if not c.streams.video:
                kinds = sorted({st.type for st in c.streams}) or ["no streams"]
                return "not a video", f"no video stream ({', '.join(kinds)} only)"
            v = c.streams.video[0]
            if (v.frames or 0) == 1 or not (c.duration or v.duration or 0) > 0:
                return "not a video", "a single picture, not a video"
            return "video", ""
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        if _looks_like_container(head):
            return "failed", f"{path}: looks like a video but cannot be opened ({reason}); it may be truncated: re-copy it from the card"
        if _is_text(head):
            return "not a video", f"a text file{' named like a video' if path.suffix.lower() in VIDEO_SUFFIXES else ''}"
        if path.suffix.lower() in VIDEO_SUFFIXES:
            return "failed", f"{path}: named like a video but cannot be opened ({reason}); re-copy or re-export it"
        return "not a video", "not a media file FFmpeg reads"


BATCH_STATUSES = ("done", "skipped", "failed", "not a video")


@dataclass(frozen=True)
class BatchItem:
    file: str
    output: str  # "" for a file that is not a video
    status: str  # one of BATCH_STATUSES
    seconds: float
    faces: int
    error: str = ""  # why: the error of a failed file, what a skipped or not-a-video file is
    kept: str = ""  # with --keep/--only: the tracks left visible ("" without a selection)
    frames: int = 0  # frames written (1 for a photo)
    retried: int = 0  # times the file was started again after its worker died (batch --ray)


def list_files(src: Path, dst: Path) -> list[Path]:
    """Every file under ``src`` (sorted), without those under ``dst`` when it lies inside ``src``."""
    out_root = dst.resolve()
    return [p for p in sorted(src.rglob("*")) if p.is_file() and out_root not in p.resolve().parents]


def target_for(path: Path, src: Path, dst: Path) -> Path:
    """Where ``path``'s output goes in the mirrored tree (a video under an odd name gets .mp4)."""
    target = dst / path.relative_to(src)
    if target.suffix.lower() not in OUTPUT_FORMATS and not is_photo(path):
        target = target.with_name(target.name + ".mp4")
    return target


def open_batch(
    in_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], selection: Selection | None, acfg: AnalyzeConfig
) -> tuple[Path, Path, list[Path]]:
    """What every batch checks before its first file: the input folder, the output folder (made),
    the files, and the --keep/--only photos (a bad photo stops the batch before any file)."""
    src, dst = Path(in_dir), Path(out_dir)
    if not src.is_dir():
        raise InputError(f"{src}: not a folder; give the folder holding the videos")
    dst.mkdir(parents=True, exist_ok=True)
    selection_references(selection, acfg.identity.recognizer)
    return src, dst, list_files(src, dst)


def process_file(
    path: Path,
    src: Path,
    dst: Path,
    acfg: AnalyzeConfig,
    render_cfg: RenderConfig | None,
    ecfg: EncodeConfig,
    selection: Selection | None,
    detector: FaceDetector | None,
    progress: ProgressSink | None = None,
) -> BatchItem:
    """One file of a batch: classified, skipped when its output exists, else run; a ``DeidError``
    becomes a failed row (the batch goes on). Shared by the threaded and the Ray batch."""
    kind, why = classify(path)
    if kind in ("not a video", "failed"):
        if kind == "failed":
            log.error("%s", why)
        return BatchItem(str(path), "", kind, 0.0, 0, why)
    target = target_for(path, src, dst)
    t0 = time.monotonic()
    if target.is_file() and not ecfg.force:
        return BatchItem(str(path), str(target), "skipped", 0.0, 0, "its output exists (done before); --force redoes it")
    try:
        heard: dict[str, object] = {}
        if kind == "photo":
            _, plan, report = run_photo(path, target, acfg, render_cfg, replace(ecfg, force=True), selection)
            kept = "" if report is None else " ".join(map(str, report.kept_tracks())) or "none"
            return BatchItem(str(path), str(target), "done", round(time.monotonic() - t0, 2), len(plan.tracks), kept=kept, frames=1)
        _, plan = run(
            path,
            target,
            acfg,
            render_cfg,
            replace(ecfg, force=True),
            progress,
            detector=detector,
            selection=selection,
            on_selection=lambda p, r: heard.update(plan=p, report=r),
        )
        kept = ""
        report = heard.get("report")
        if isinstance(report, SelectionReport):
            write_kept_sheet(path, plan, report.kept_tracks(), kept_sheet_path(target))
            kept = " ".join(map(str, report.kept_tracks())) or "none"
        return BatchItem(
            str(path), str(target), "done", round(time.monotonic() - t0, 2), len(plan.identities), kept=kept, frames=plan.frame_count
        )
    except DeidError as exc:
        log.error("%s", exc)
        return BatchItem(str(path), str(target), "failed", round(time.monotonic() - t0, 2), 0, str(exc))


def batch(
    in_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    analyze_cfg: AnalyzeConfig | None = None,
    render_cfg: RenderConfig | None = None,
    encode_cfg: EncodeConfig | None = None,
    jobs: int = 1,
    progress_for: Callable[[Path], ProgressSink] | None = None,
    selection: Selection | None = None,
) -> list[BatchItem]:
    """Run every video and photo under ``in_dir`` into the mirrored tree under ``out_dir``.

    Every file under ``in_dir`` gets a row in the summary with its status and why: done, skipped
    (its output exists), failed (with the error) or not a video (with what it is), so nothing a
    journalist put in the folder can go missing unnoticed. Outputs appear only when complete
    (atomic rename), so an existing output means done: a rerun after an interruption skips it. One
    file's failure is recorded and the others go on. (``cluster.batch_ray``: the same on Ray.)
    """
    acfg = analyze_cfg or AnalyzeConfig()
    src, dst, files = open_batch(in_dir, out_dir, selection, acfg)
    ecfg = encode_cfg or EncodeConfig()
    detector = create_detector(beside_encoder(acfg.detect))  # each run encodes while it detects

    def one(path: Path) -> BatchItem:
        progress = progress_for(path) if progress_for else None
        return process_file(path, src, dst, acfg, render_cfg, ecfg, selection, detector, progress)

    if jobs > 1:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            items = list(pool.map(one, files))
    else:
        items = [one(p) for p in files]
    write_summary(dst, items)
    return items


def write_summary(out_dir: Path, items: list[BatchItem]) -> None:
    """``deid-edit-summary.json`` and ``.csv`` in ``out_dir``: one row per file, the fields of ``BatchItem``."""
    rows = [item.__dict__ for item in items]
    (out_dir / f"{SUMMARY}.json").write_text(json.dumps({"files": rows}, indent=1))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(BatchItem.__dataclass_fields__))
    w.writeheader()
    w.writerows(rows)
    (out_dir / f"{SUMMARY}.csv").write_text(buf.getvalue())
