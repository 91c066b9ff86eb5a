"""Run the ``deid-edit`` CLI for the Blender add-on, without importing ``bpy``.

Everything that touches a subprocess lives here so it can be tested with plain pytest, and so the
threads that read the child's pipes can never reach Blender's API (``bpy`` is not thread-safe).
The add-on drives a ``Batch`` from the main thread: the modal operator calls ``Batch.step()`` on a
timer, the blocking ``execute()`` path calls ``Batch.run()``; both see the same events.

The CLI contract (``deid-edit run ... --progress json``): one JSON object per stdout line,
``{"stage": "analyze", "done": 120, "total": 2400}``, then ``{"stage": "done", "output": ...}`` or
``{"stage": "error", "message": ...}``; exit 0 ok, 1 error, 2 usage, 130 interrupted.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODES: tuple[str, ...] = ("blur", "pixelate", "solid", "matte")
"""Anonymizers offered in the UI (the CLI also has ``debug``, which is not for delivery)."""

# Where each known stage sits in one clip's overall progress; unknown stages fall back to their own fraction.
STAGE_SPANS: dict[str, tuple[float, float]] = {"analyze": (0.0, 0.7), "render": (0.7, 1.0)}

EXIT_MESSAGES: dict[int, str] = {2: "the CLI rejected its arguments (usage error)", 130: "interrupted"}

STDERR_TAIL_LINES = 20
PIPE_GRACE = 2.0


class RunnerError(Exception):
    """A problem the user must fix before the CLI can run (no executable, bad input path)."""


def parse_line(line: str | bytes) -> dict[str, Any] | None:
    """One stdout line as a dict, or None when it is not a JSON object with a ``stage``.

    Libraries can print stray lines to stdout; ignoring them keeps one noisy dependency from
    breaking the add-on's progress display.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", "replace")
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("stage"), str):
        return None
    return obj


def stage_fraction(event: dict[str, Any]) -> float | None:
    """done/total of a progress event, clamped to 0..1; None when the event carries no counts."""
    done, total = event.get("done"), event.get("total")
    if not isinstance(done, int | float) or not isinstance(total, int | float) or total <= 0:
        return None
    return min(max(done / total, 0.0), 1.0)


def error_message(events: Sequence[dict[str, Any]], stderr_lines: Sequence[str], returncode: int | None) -> str:
    """The most useful one-line explanation of a failed run.

    Prefers the CLI's own ``{"stage": "error"}`` message, then its ``deid-edit: error:`` stderr line,
    then the last stderr line (a crash or a usage error from click), then the exit code.
    """
    for event in reversed(events):
        if event.get("stage") == "error" and event.get("message"):
            return str(event["message"])
    lines = [s.strip() for s in stderr_lines if s.strip()]
    for prefix in ("deid-edit: error:", "Error:"):  # the CLI's handled error, then click's usage error
        for text in reversed(lines):
            if text.startswith(prefix):
                return text[len(prefix) :].strip()
    if lines:
        return lines[-1]
    if returncode is None:
        return "the CLI stopped without a result"
    return EXIT_MESSAGES.get(returncode, f"the CLI exited with code {returncode}")


def resolve_cli(cli: str) -> str:
    """Absolute path of the ``deid-edit`` executable, found on PATH when given as a bare name.

    Blender is often started from a desktop launcher whose PATH lacks the user's virtualenv, so a
    clear "not found" here saves a confusing OSError later.
    """
    cli = os.path.expanduser(cli.strip()) if cli else "deid-edit"
    if os.sep in cli or (os.altsep and os.altsep in cli):
        if os.path.isfile(cli) and os.access(cli, os.X_OK):
            return os.path.abspath(cli)
        raise RunnerError(f"deid-edit executable not found or not executable: {cli} (set its path in the add-on preferences)")
    found = shutil.which(cli)
    if not found:
        raise RunnerError(f"{cli!r} is not on PATH; set the full path to deid-edit in the add-on preferences")
    return found


def output_path(source: str | os.PathLike[str], mode: str, out_dir: str | os.PathLike[str] | None = None) -> Path:
    """The first-choice name for the anonymized copy of ``source``: ``<stem>.deid-<mode><ext>`` in ``out_dir``.

    Without ``out_dir`` it is next to the source (only ``main``'s manual check does that; the
    add-on always passes its output folder). ``choose_output`` decides the name actually used.
    """
    src = Path(source)
    folder = Path(out_dir) if out_dir else src.parent
    return folder / f"{src.stem}.deid-{mode}{src.suffix}"


def path_key(path: str | os.PathLike[str]) -> str:
    """A path as a comparable key: absolute, normalised, case-folded where the file system is."""
    return os.path.normcase(os.path.normpath(os.path.abspath(os.fspath(path))))


def choose_output(
    source: str | os.PathLike[str],
    mode: str,
    out_dir: str | os.PathLike[str],
    owned: Mapping[str, str],
    exists: Callable[[str], bool] = os.path.exists,
) -> tuple[Path, bool]:
    """The output path for ``source`` and whether the CLI may overwrite it (``--force``).

    ``owned`` maps ``path_key(output)`` to ``path_key(source)`` for every file this project's add-on
    wrote (and, for a batch, the names already claimed by its other clips). Candidates are
    ``<stem>.deid-<mode><ext>``, then ``-2``, ``-3``…: the first one that is our own earlier output
    for this same source is reused and overwritten (a re-run replaces its result); otherwise the
    first one that neither exists nor is recorded for another source is taken. A file the add-on did
    not write, or wrote for another clip with the same name, is never overwritten.
    """
    base = output_path(source, mode, out_dir)
    src = path_key(source)
    n = 1
    while True:
        candidate = base if n == 1 else base.with_name(f"{base.stem}-{n}{base.suffix}")
        owner = owned.get(path_key(candidate))
        if owner == src:
            return candidate, exists(str(candidate))
        if owner is None and not exists(str(candidate)) and path_key(candidate) != src:
            return candidate, False
        n += 1


def build_command(
    cli: str,
    video: str | os.PathLike[str],
    output: str | os.PathLike[str],
    mode: str,
    keep: Sequence[str] = (),
    only: Sequence[str] = (),
    force: bool = False,
) -> list[str]:
    """The argv for one clip; ``force`` (``--force``) only for our own previous output (see ``choose_output``)."""
    if mode not in MODES:
        raise RunnerError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    cmd = [cli, "run", os.fspath(video), "-o", os.fspath(output), "--mode", mode]
    if force:
        cmd.append("--force")
    cmd += ["--progress", "json"]
    for photo in keep:
        cmd += ["--keep", photo]
    for photo in only:
        cmd += ["--only", photo]
    return cmd


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment without Python variables from Blender's interpreter.

    Blender's bundled Python may export PYTHONHOME/PYTHONPATH; the CLI has its own interpreter and
    would fail to import its packages with them.
    """
    env = dict(os.environ if base is None else base)
    for name in ("PYTHONHOME", "PYTHONPATH", "PYTHONEXECUTABLE"):
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Job:
    """One running CLI process; pipes are read by daemon threads into a queue drained by ``poll()``.

    Only ``poll``/``cancel``/``wait`` are called from the main thread; the reader threads touch
    nothing but the queue and the stderr deque, so no Blender state is ever reached from them.
    """

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self.argv = list(argv)
        self.events: list[dict[str, Any]] = []
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self.cancelled = False
        self._exited_at: float | None = None
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue()
        posix = os.name == "posix"
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=child_env() if env is None else env,
                cwd=cwd,
                # own process group: Ctrl-C in Blender's terminal does not reach it, and cancel() signals the group
                start_new_session=posix,
                creationflags=0 if posix else getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0),
            )
        except OSError as exc:
            raise RunnerError(f"could not start {self.argv[0]}: {exc}") from exc
        self._threads = [
            threading.Thread(target=self._read_stdout, name="deid-edit-stdout", daemon=True),
            threading.Thread(target=self._read_stderr, name="deid-edit-stderr", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            event = parse_line(raw)
            if event is not None:
                self._queue.put(event)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            self.stderr_tail.append(raw.decode("utf-8", "replace").rstrip())

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    def finished(self) -> bool:
        """True once the process exited and both pipes are drained (so no event is still in flight).

        A grandchild that inherited the pipes could keep them open forever; after ``PIPE_GRACE``
        seconds past the exit the job counts as finished anyway, so the UI never waits on it.
        """
        if self.proc.poll() is None:
            return False
        if self._exited_at is None:
            self._exited_at = time.monotonic()
        return not any(t.is_alive() for t in self._threads) or time.monotonic() - self._exited_at > PIPE_GRACE

    def poll(self) -> list[dict[str, Any]]:
        """Events that arrived since the last call (never blocks)."""
        new: list[dict[str, Any]] = []
        while True:
            try:
                new.append(self._queue.get_nowait())
            except queue.Empty:
                break
        self.events.extend(new)
        return new

    def wait(self, timeout: float | None = None) -> int:
        """Block until the process exits and its pipes are drained; returns the exit code."""
        code = self.proc.wait(timeout)
        for thread in self._threads:
            thread.join(timeout)
        self.poll()
        return code

    def cancel(self, grace: float = 3.0) -> int:
        """Stop the child: SIGINT first (the CLI then removes its temp file), SIGKILL after ``grace`` seconds.

        The CLI writes atomically, so even a hard kill leaves nothing at the output path.
        """
        self.cancelled = True
        if self.proc.poll() is None:
            self._signal(signal.SIGINT if os.name == "posix" else getattr(signal, "CTRL_BREAK_EVENT", signal.SIGTERM))
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL if os.name == "posix" else signal.SIGTERM)
                self.proc.wait()
        return self.wait(grace)

    def _signal(self, sig: int) -> None:
        try:
            if os.name == "posix":
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    def result(self) -> Result:
        """The outcome once ``finished()``; raises if the process is still running."""
        if self.proc.poll() is None:
            raise RuntimeError("job still running")
        self.poll()
        code = self.proc.returncode
        done = next((e for e in reversed(self.events) if e.get("stage") == "done"), None)
        if self.cancelled:
            return Result(ok=False, cancelled=True, returncode=code, message="cancelled")
        if code == 0 and done is not None:
            return Result(ok=True, returncode=0, output=str(done.get("output", "")), summary=done)
        return Result(ok=False, returncode=code, message=error_message(self.events, list(self.stderr_tail), code))


@dataclass
class Result:
    """How one clip's run ended."""

    ok: bool
    returncode: int | None
    output: str = ""
    message: str = ""
    cancelled: bool = False
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class Task:
    """One clip to anonymize; ``key`` identifies the caller's strip(s) it serves; ``force``: overwrite ``output``."""

    source: str
    output: str
    key: Any = None
    force: bool = False


class Batch:
    """Runs tasks one after another and reports progress; driven by ``step()`` from one thread.

    One child at a time keeps the machine usable for editing while the CLI works (the CLI itself
    uses all cores). ``on_result(task, result)`` is called from ``step()``, i.e. from the caller's
    thread, so in Blender it may create strips.
    """

    def __init__(
        self,
        tasks: Sequence[Task],
        argv_for: Callable[[Task], list[str]],
        on_result: Callable[[Task, Result], None] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.tasks = list(tasks)
        self.argv_for = argv_for
        self.on_result = on_result
        self.env = env
        self.results: list[tuple[Task, Result]] = []
        self.index = 0
        self.job: Job | None = None
        self.stage = ""
        self.stage_done = 0
        self.stage_total = 0
        self._clip_fraction = 0.0
        self.cancelled = False

    @property
    def finished(self) -> bool:
        return self.cancelled or self.index >= len(self.tasks)

    @property
    def fraction(self) -> float:
        """Overall progress 0..1 across all clips; never goes backwards within a clip."""
        if not self.tasks:
            return 1.0
        if self.finished:
            return 1.0
        return min((self.index + self._clip_fraction) / len(self.tasks), 1.0)

    def status_text(self) -> str:
        """A short line for the UI, e.g. ``clip 1/2 analyze 40/60``."""
        if self.finished:
            return "cancelled" if self.cancelled else "done"
        text = f"clip {self.index + 1}/{len(self.tasks)}"
        if self.stage:
            text += f" {self.stage} {self.stage_done}/{self.stage_total}" if self.stage_total else f" {self.stage}"
        return text

    def _absorb(self, event: dict[str, Any]) -> None:
        stage = str(event.get("stage", ""))
        frac = stage_fraction(event)
        if frac is None:
            return
        self.stage, self.stage_done, self.stage_total = stage, int(event["done"]), int(event["total"])
        lo, hi = STAGE_SPANS.get(stage, (0.0, 1.0))
        self._clip_fraction = max(self._clip_fraction, lo + (hi - lo) * frac)

    def step(self) -> list[dict[str, Any]]:
        """Advance without blocking: start the next child, take its events, finish it. Returns the new events.

        A task whose child cannot start (missing executable) is reported as a failed ``Result``
        rather than raised, so one bad clip does not abort the rest of the batch.
        """
        if self.finished:
            return []
        task = self.tasks[self.index]
        if self.job is None:
            try:
                self.job = Job(self.argv_for(task), env=self.env)
            except RunnerError as exc:
                self._complete(task, Result(ok=False, returncode=None, message=str(exc)))
                return []
        events = self.job.poll()
        for event in events:
            self._absorb(event)
        if self.job.finished():
            events += self.job.poll()
            self._complete(task, self.job.result())
        return events

    def _complete(self, task: Task, result: Result) -> None:
        self.results.append((task, result))
        self.job = None
        self.index += 1
        self.stage, self.stage_done, self.stage_total, self._clip_fraction = "", 0, 0, 0.0
        if self.on_result is not None:
            self.on_result(task, result)

    def cancel(self) -> None:
        """Kill the running child (if any) and skip the remaining tasks."""
        if self.job is not None:
            task = self.tasks[self.index]
            self.job.cancel()
            self.results.append((task, self.job.result()))
            self.job = None
        self.cancelled = True

    def run(self, poll_interval: float = 0.05, on_progress: Callable[[Batch], None] | None = None) -> list[tuple[Task, Result]]:
        """Blocking driver (headless Blender, scripts, tests): step until every task has a result."""
        while not self.finished:
            self.step()
            if on_progress is not None:
                on_progress(self)
            if not self.finished:
                time.sleep(poll_interval)
        return self.results


def main(argv: Sequence[str] | None = None) -> int:
    """``python runner.py CLI VIDEO MODE``: run one clip and print progress; a manual check outside Blender."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3:
        print("usage: runner.py CLI VIDEO MODE", file=sys.stderr)
        return 2
    cli, video, mode = args
    output, _ = choose_output(video, mode, Path(video).parent, {})  # a free name: never overwrites anything
    task = Task(video, str(output))
    batch = Batch([task], lambda t: build_command(resolve_cli(cli), t.source, t.output, mode))
    results = batch.run(on_progress=lambda b: print(f"{b.fraction:6.1%} {b.status_text()}", file=sys.stderr))
    result = results[0][1]
    print(result.output if result.ok else f"error: {result.message}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
