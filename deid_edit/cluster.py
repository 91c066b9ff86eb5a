"""Batch on a Ray cluster: ``deid-edit batch IN -o OUT --ray [ADDRESS]``.

Every file under IN is one Ray task running ``folder_batch.process_file``, so the rules are those
of the threaded batch: outputs appear only when complete, existing outputs are skipped, one file's
failure is recorded and the others go on, and every file gets a row in the same
``deid-edit-summary.json``/``.csv``. What Ray adds: the files spread over every worker of a cluster
(one started here, or an existing one joined by address), a GPU per task where the workers have
one, and retries: a worker that dies (killed, out of memory, its machine lost) loses only the file
it was working on, which starts again on another worker, up to ``retries`` times; its row says how
many times. Models load once per worker process (``backend.load_model`` keeps them) and the
detector once per worker (below), not once per file.

IN and OUT must be paths every worker sees (shared storage mounted at the same path): a worker
that cannot see a file or the output folder fails that file with a one-line error saying so.

Why files are not split at shot cuts: a newsroom's batch is many files, so per-file tasks already
keep every worker busy; within one file the identities across cuts (``--keep``/``--only``, the
cloak's per-track decisions) need the whole video, and segments joined without re-encoding must
start on keyframes, which cuts seldom are. A single long file is therefore limited to one
worker's speed (README, "Batch on a Ray cluster").

Ray is optional (``pip install 'deid-edit[ray]'``) and imported only here.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .config import AnalyzeConfig, EncodeConfig, RenderConfig
from .errors import DeidError, InputError
from .folder_batch import BATCH_STATUSES, BatchItem, open_batch, process_file, target_for, write_summary
from .identities import Selection

log = logging.getLogger(__name__)

RAY_HINT = "pip install 'deid-edit[ray]'"
SHARED_STORAGE = "batch --ray needs IN and OUT on storage every worker mounts at the same path"
REPORT_EVERY = 1.0  # seconds between a worker's frame counts on the progress board


@dataclass(frozen=True)
class ClusterOptions:
    """How the batch uses Ray: the cluster to join (None starts one here) and what a task asks for."""

    address: str | None = None
    cpus_per_task: float = 1.0
    gpus_per_task: float | None = None  # None: 1 where the cluster has a GPU, else 0
    retries: int = 2  # times a file starts again after its worker died
    num_cpus: int | None = None  # a cluster started here: CPUs it may use (default: all)


@dataclass
class ClusterReport:
    """What the run used: start-up time, the GPU per task, and per worker process the files it ran
    and how often it read a model from disk (once per model, whatever the number of files)."""

    startup_seconds: float = 0.0  # ray.init: starting (or joining) the cluster
    first_task_seconds: float = 0.0  # from the first submission to a worker starting a file (worker start-up)
    shutdown_seconds: float = 0.0  # stopping a cluster started here
    gpus_per_task: float = 0.0
    workers: dict[str, dict[str, int]] = field(default_factory=dict)


def import_ray() -> Any:
    """The ``ray`` module, or the one-line error saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise InputError(f"--ray needs Ray, which is not installed here; {RAY_HINT}") from exc
    return ray


class ProgressBoard:
    """A Ray actor holding the frames each file in flight has rendered, for the cluster's fps."""

    def __init__(self) -> None:
        self.frames: dict[str, int] = {}
        self.closed: set[str] = set()  # files whose row is in: a report still on its way is ignored

    def report(self, file: str, frames: int) -> None:
        if file not in self.closed:
            self.frames[file] = frames

    def forget(self, file: str, closed: bool = True) -> None:
        self.frames.pop(file, None)
        if closed:
            self.closed.add(file)
        else:
            self.closed.discard(file)

    def in_flight(self) -> int:
        return sum(self.frames.values())


class BoardProgress:
    """A worker's ``ProgressSink``: rendered frames to the board, at most once a second."""

    def __init__(self, board: Any, file: str) -> None:
        self.board, self.file, self.last = board, file, 0.0

    def update(self, stage: str, done: int, total: int) -> None:
        if stage != "render":
            return
        now = time.monotonic()
        if now - self.last >= REPORT_EVERY or done >= total:
            self.last = now
            self.board.report.remote(self.file, done)

    def event(self, stage: str, **fields: Any) -> None:
        pass


_DETECTORS: dict[str, Any] = {}  # per worker process: the detector of each analysis setting


def _worker_detector(acfg: AnalyzeConfig) -> Any:
    from .detect import create_detector
    from .pipeline import beside_encoder

    cfg = beside_encoder(acfg.detect)
    key = repr(cfg)
    if key not in _DETECTORS:
        _DETECTORS[key] = create_detector(cfg)
    return _DETECTORS[key]


def run_task(
    path: Path,
    src: Path,
    dst: Path,
    acfg: AnalyzeConfig,
    rcfg: RenderConfig | None,
    ecfg: EncodeConfig,
    selection: Selection | None,
    board: Any,
) -> tuple[BatchItem, dict[str, Any]]:
    """One file on a worker: its row, and who ran it (host, pid, models read so far)."""
    began = time.time()  # wall clock: the driver compares it with its own (one machine: the same clock)
    from .backend import load_count

    host = socket.gethostname()
    who = {"host": host, "pid": os.getpid(), "began": began}
    if not path.is_file():
        item = BatchItem(str(path), "", "failed", 0.0, 0, f"{path}: not visible on worker {host}; {SHARED_STORAGE}")
    elif not dst.is_dir():
        item = BatchItem(str(path), "", "failed", 0.0, 0, f"{dst}: output folder not visible on worker {host}; {SHARED_STORAGE}")
    else:
        try:
            detector = _worker_detector(acfg)
        except DeidError as exc:
            item = BatchItem(str(path), "", "failed", 0.0, 0, str(exc))
        else:
            item = process_file(path, src, dst, acfg, rcfg, ecfg, selection, detector, BoardProgress(board, str(path)))
    return item, {**who, "model_loads": load_count()}


def check_feasible(ray: Any, cpus: float, gpus: float) -> None:
    """Fail at once where no node could ever run a task (Ray would wait for ever)."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if gpus > 0 and not any(r.get("GPU", 0) >= gpus for r in nodes):
        raise InputError(f"--gpus-per-task {gpus:g}: no node of the cluster has that many GPUs; use --gpus-per-task 0 (CPUs)")
    if not any(r.get("CPU", 0) >= cpus for r in nodes):
        most = max((r.get("CPU", 0) for r in nodes), default=0)
        raise InputError(f"--cpus-per-task {cpus:g}: no node of the cluster has that many CPUs (at most {most:g}); ask for fewer")


def remove_partials(target: Path) -> None:
    """Delete the temporary files a killed run left beside ``target`` (``encode.temp_path_for``)."""
    for p in target.parent.glob(f".{target.stem}.*.part{target.suffix}"):
        try:
            p.unlink()
        except OSError:  # gone already, or not ours to delete: the retry writes a new one anyway
            pass


def batch_ray(
    in_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    analyze_cfg: AnalyzeConfig | None = None,
    render_cfg: RenderConfig | None = None,
    encode_cfg: EncodeConfig | None = None,
    options: ClusterOptions | None = None,
    selection: Selection | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[list[BatchItem], ClusterReport]:
    """``folder_batch.batch`` with every file a Ray task; returns the rows (in file order, as the
    summary) and what the cluster did. ``on_progress`` gets the counts (files done, failed,
    remaining, frames, fps over the cluster) about twice a second and after every file."""
    opts = options or ClusterOptions()
    ray = import_ray()
    acfg = analyze_cfg or AnalyzeConfig()
    src, dst, files = open_batch(in_dir, out_dir, selection, acfg)
    ecfg = encode_cfg or EncodeConfig()
    report = ClusterReport()
    started = not ray.is_initialized()
    t0 = time.monotonic()
    if started:
        try:
            if opts.address:
                ray.init(address=opts.address, log_to_driver=False, logging_level=logging.ERROR)
            else:
                ray.init(num_cpus=opts.num_cpus, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {opts.address}" if opts.address else "a local Ray cluster"
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            advice = "check the address 'ray start' printed and, where the cluster uses tokens, set RAY_AUTH_MODE=token here too"
            raise InputError(f"cannot start or join {where} ({first}); {advice}") from exc
    report.startup_seconds = time.monotonic() - t0
    try:
        # workers run in other folders (and machines): they get absolute paths, the rows are mapped back
        absolute = [src.resolve() / p.relative_to(src) for p in files]
        items = _schedule(ray, absolute, src.resolve(), dst.resolve(), acfg, render_cfg, ecfg, opts, selection, report, on_progress)
        items = [_as_given(it, src, dst) for it in items]
    finally:
        if started:
            t1 = time.monotonic()
            ray.shutdown()
            report.shutdown_seconds = time.monotonic() - t1
    write_summary(dst, items)
    return items, report


def _as_given(item: BatchItem, src: Path, dst: Path) -> BatchItem:
    """``item`` with the absolute paths the workers used written as the user gave them, so the
    summary reads as the threaded batch's does."""

    def given(text: str) -> str:
        for absolute, as_given in ((dst.resolve(), dst), (src.resolve(), src)):  # dst first: it may lie inside src
            text = text.replace(str(absolute), str(as_given))
        return text

    return replace(item, file=given(item.file), output=given(item.output), error=given(item.error))


def _schedule(
    ray: Any,
    files: list[Path],
    src: Path,
    dst: Path,
    acfg: AnalyzeConfig,
    rcfg: RenderConfig | None,
    ecfg: EncodeConfig,
    opts: ClusterOptions,
    selection: Selection | None,
    report: ClusterReport,
    on_progress: Callable[[dict[str, Any]], None] | None,
) -> list[BatchItem]:
    from ray.exceptions import RayError, RayTaskError

    gpus = opts.gpus_per_task
    if gpus is None:
        gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
    report.gpus_per_task = gpus
    check_feasible(ray, opts.cpus_per_task, gpus)
    # max_calls=0: a worker process runs file after file with its models loaded; retries are ours
    # (max_retries=0), so the summary can say which file was started again and why
    task = ray.remote(max_calls=0, max_retries=0)(run_task).options(num_cpus=opts.cpus_per_task, num_gpus=gpus)
    board = ray.remote(ProgressBoard).options(num_cpus=0).remote()

    def submit(i: int) -> Any:
        return task.remote(files[i], src, dst, acfg, rcfg, ecfg, selection, board)

    t_start, t_submit = time.monotonic(), time.time()
    pending = {submit(i): i for i in range(len(files))}
    first_began: float | None = None
    items: list[BatchItem | None] = [None] * len(files)
    attempts = [0] * len(files)
    frames_done = 0

    def tell() -> None:
        if on_progress is None:
            return
        counts = {s: sum(1 for it in items if it is not None and it.status == s) for s in BATCH_STATUSES}
        frames = frames_done + ray.get(board.in_flight.remote())
        elapsed = max(time.monotonic() - t_start, 1e-6)
        on_progress(
            {
                "files": len(files),
                **{k.replace(" ", "_"): v for k, v in counts.items()},
                "remaining": sum(1 for it in items if it is None),
                "retried": sum(1 for a in attempts if a),
                "frames": frames,
                "fps": round(frames / elapsed, 2),
            }
        )

    tell()
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                i = pending.pop(ref)
                path = files[i]
                try:
                    item, who = ray.get(ref)
                except RayTaskError as exc:  # an unexpected error in our code: recorded, the batch goes on
                    cause = exc.cause if getattr(exc, "cause", None) is not None else exc
                    log.error("%s: failed on a worker (%s: %s)", path, type(cause).__name__, cause)
                    why = f"{path}: internal error ({type(cause).__name__}: {cause}); please report it"
                    item = BatchItem(str(path), "", "failed", 0.0, 0, why)
                except RayError as exc:  # the worker or its machine died: only this file is lost
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    target = target_for(path, src, dst)
                    remove_partials(target)
                    if attempts[i] < opts.retries:
                        attempts[i] += 1
                        log.warning("%s: its worker died (%s); starting it again (%d of %d)", path, reason, attempts[i], opts.retries)
                        ray.get(board.forget.remote(str(path), closed=False))
                        pending[submit(i)] = i
                        continue
                    item = BatchItem(
                        str(path),
                        str(target),
                        "failed",
                        0.0,
                        0,
                        f"{path}: its worker died {attempts[i] + 1} times ({reason}); rerun the batch to retry it, or raise --retries",
                    )
                else:
                    first_began = who["began"] if first_began is None else min(first_began, who["began"])
                    report.first_task_seconds = max(0.0, first_began - t_submit)
                    key = f"{who['host']}:{who['pid']}"
                    w = report.workers.setdefault(key, {"files": 0, "model_loads": 0})
                    w["files"] += 1
                    w["model_loads"] = who["model_loads"]
                if attempts[i]:
                    item = replace(item, retried=attempts[i])
                items[i] = item
                frames_done += item.frames if item.status == "done" else 0
                ray.get(board.forget.remote(str(path)))
                tell()
            if not ready:
                tell()
    except BaseException:  # interrupted (Ctrl-C): stop the files in flight, leave no half outputs
        for ref in pending:
            ray.cancel(ref, force=True)
        ray.wait(list(pending), num_returns=len(pending), timeout=5.0)  # the workers are gone before their files go
        for i in pending.values():
            remove_partials(target_for(files[i], src, dst))
        raise
    return [it for it in items if it is not None]
