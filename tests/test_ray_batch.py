"""Batch on a local Ray cluster (``batch --ray``, 2 CPUs): the same rows and bytes as the threaded
batch, a failing file, resume, and a worker killed in the middle of a file."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import decoded
from test_batch import run_cli

FAST = ("--progress", "none", "--preset", "ultrafast")


def rows(out: Path) -> dict[str, dict[str, str]]:
    """The summary's rows by file name, without the timing and the output folder's own name."""
    got = {}
    for r in csv.DictReader((out / "deid-edit-summary.csv").open()):
        r.pop("seconds")
        r["output"] = r["output"].replace(str(out), "OUT")
        got[Path(r["file"]).name] = r
    return got


def folder(tmp_path: Path, clip: Path) -> Path:
    """Two clips, a text file and a truncated MP4 (which must fail, with why)."""
    src = tmp_path / "in"
    (src / "day1").mkdir(parents=True)
    shutil.copy(clip, src / "a.mp4")
    shutil.copy(clip, src / "day1" / "b.mp4")
    (src / "notes.txt").write_text("call back on Tuesday\n")
    data = clip.read_bytes()
    (src / "cut.mp4").write_bytes(data[: len(data) // 2])
    return src


@pytest.mark.slow  # ~15 s: a local Ray cluster started twice
def test_ray_batch_matches_threaded_batch_and_resumes(sample_clip, tmp_path, capsys):
    src = folder(tmp_path, sample_clip[0])
    threads, on_ray = tmp_path / "threads", tmp_path / "ray"
    assert run_cli("batch", str(src), "-o", str(threads), "--jobs", "2", *FAST) == 1
    capsys.readouterr()
    assert run_cli("batch", str(src), "-o", str(on_ray), *FAST, "--ray") == 1, "a failed file must make the batch exit non-zero"
    captured = capsys.readouterr()
    assert "4 files: 2 done, 0 skipped, 1 failed, 1 not videos" in captured.out
    assert "cut.mp4" in captured.err and "truncated" in captured.err

    # the same rows (status, faces, frames, why) and the same bytes as without Ray
    assert rows(on_ray) == rows(threads)
    got = rows(on_ray)
    assert got["a.mp4"]["status"] == got["b.mp4"]["status"] == "done" and got["a.mp4"]["frames"] == str(sample_clip[1].frame_count)
    assert got["cut.mp4"]["status"] == "failed" and "truncated" in got["cut.mp4"]["error"]
    assert got["notes.txt"]["status"] == "not a video"
    for name in ("a.mp4", "day1/b.mp4"):
        assert (on_ray / name).read_bytes() == (threads / name).read_bytes(), name
    assert json.loads((on_ray / "deid-edit-summary.json").read_text())["files"][0]["retried"] == 0

    # resume: finished outputs are skipped (untouched), a missing one is redone, the bad one fails again
    (on_ray / "day1" / "b.mp4").unlink()
    before = (on_ray / "a.mp4").stat().st_mtime_ns
    assert run_cli("batch", str(src), "-o", str(on_ray), *FAST, "--ray") == 1
    got = rows(on_ray)
    assert {k: v["status"] for k, v in got.items()} == {
        "a.mp4": "skipped",
        "b.mp4": "done",
        "cut.mp4": "failed",
        "notes.txt": "not a video",
    }
    assert (on_ray / "a.mp4").stat().st_mtime_ns == before
    assert (on_ray / "day1" / "b.mp4").read_bytes() == (threads / "day1" / "b.mp4").read_bytes()


def holder_of(path: Path) -> int | None:
    """The pid of a process that has ``path`` open (Linux /proc), else None."""
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                if os.readlink(fd) == str(path):
                    return int(fd_dir.parent.name)
        except OSError:
            continue
    return None


@pytest.mark.slow  # ~20 s
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker through /proc")
def test_ray_worker_killed_mid_file_is_retried(tmp_path, capsys):
    """SIGKILL the worker while it writes a file (as the OOM killer would): the file starts again
    on another worker, its output is complete and the same as without Ray, no temporary file is
    left, and the summary says it was retried."""
    from deid_edit.sample import make_sample_clip

    clip = tmp_path / "long.mp4"
    truth = make_sample_clip(clip, frames=150, cut_frame=75)
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(clip, src / "long.mp4")
    out = tmp_path / "out"
    killed: list[int] = []
    done = threading.Event()

    def killer() -> None:  # the CLI must run in the main thread (it installs signal handlers)
        while not done.is_set() and not killed:
            for part in out.glob(".long.*.part.mp4") if out.is_dir() else ():
                pid = holder_of(part.resolve())
                if pid is not None and pid != os.getpid():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.01)

    watcher = threading.Thread(target=killer, daemon=True)
    watcher.start()
    try:
        code = run_cli("batch", str(src), "-o", str(out), *FAST, "--ray", "--retries", "1")
    finally:
        done.set()
        watcher.join()
    assert killed, "never saw a worker writing the file"
    assert code == 0
    (row,) = json.loads((out / "deid-edit-summary.json").read_text())["files"]
    assert row["status"] == "done" and row["retried"] == 1, row
    assert decoded(out / "long.mp4")["frames"] == truth.frame_count
    assert not list(out.glob(".*.part*")), "the killed run's temporary file must go"
    assert "retried 1x after its worker died" in capsys.readouterr().out
    reference = tmp_path / "threads"
    assert run_cli("batch", str(src), "-o", str(reference), *FAST) == 0
    assert (out / "long.mp4").read_bytes() == (reference / "long.mp4").read_bytes()


def test_ray_flags_and_missing_ray(sample_clip, tmp_path, monkeypatch, capsys):
    """--retries without --ray and --jobs with --ray are usage errors; without Ray installed,
    --ray says how to install it, writes nothing and exits non-zero."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(sample_clip[0], src / "a.mp4")
    assert run_cli("batch", str(src), "-o", str(tmp_path / "o1"), "--retries", "3") == 2
    assert run_cli("batch", str(src), "-o", str(tmp_path / "o2"), "--ray", "--jobs", "2") == 2
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    capsys.readouterr()
    assert run_cli("batch", str(src), "-o", str(tmp_path / "o3"), "--ray") != 0
    err = capsys.readouterr().err
    assert "deid-edit[ray]" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o3" / "a.mp4").exists()


@pytest.mark.slow  # ~12 s
def test_ray_models_load_once_per_worker_and_progress(sample_clip, tmp_path):
    """One CPU, so one task at a time: the worker runs file after file with the models it loaded
    for the first (a reload per file would show as 2 more loads per file); the progress counts
    end with every file accounted for and frames per second over the cluster."""
    from deid_edit.cluster import ClusterOptions, batch_ray
    from deid_edit.config import EncodeConfig

    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4"):
        shutil.copy(sample_clip[0], src / name)
    seen: list[dict] = []
    items, report = batch_ray(
        src, tmp_path / "out", encode_cfg=EncodeConfig(preset="ultrafast"), options=ClusterOptions(num_cpus=1), on_progress=seen.append
    )
    assert [i.status for i in items] == ["done"] * 3
    busiest = max(report.workers.values(), key=lambda w: w["files"])
    assert busiest["files"] >= 2, report.workers
    assert busiest["model_loads"] <= 2, f"models read again for later files: {report.workers}"
    assert seen[0]["remaining"] == 3 and seen[-1]["remaining"] == 0 and seen[-1]["done"] == 3
    assert seen[-1]["frames"] == 3 * sample_clip[1].frame_count and seen[-1]["fps"] > 0


@pytest.mark.slow  # ~5 s: a local cluster started once
def test_ray_task_no_node_can_run_fails_at_once(sample_clip, tmp_path, capsys):
    """A GPU asked of a cluster without one: a one-line error at once, not a batch waiting for ever."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(sample_clip[0], src / "a.mp4")
    capsys.readouterr()
    assert run_cli("batch", str(src), "-o", str(tmp_path / "out"), "--ray", "--gpus-per-task", "1", "--progress", "none") == 1
    err = capsys.readouterr().err.strip()
    assert "--gpus-per-task 1" in err and "no node" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "a.mp4").exists()


@pytest.mark.slow  # ~15 s
def test_ray_batch_joins_a_running_cluster(sample_clip, tmp_path, monkeypatch):
    """`ray start --head` (what a newsroom runs on its head node), then `batch --ray ADDRESS`: the
    files run on that cluster, which is left running."""
    import socket
    import subprocess

    ray_cli = str(Path(sys.executable).with_name("ray"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # both sides, as the README says
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(sample_clip[0], src / "a.mp4")
    start = [ray_cli, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"]
    subprocess.run(start, check=True, capture_output=True, timeout=120)
    try:
        assert run_cli("batch", str(src), "-o", str(tmp_path / "out"), *FAST, "--ray", f"127.0.0.1:{port}") == 0
        assert decoded(tmp_path / "out" / "a.mp4")["frames"] == sample_clip[1].frame_count
        status = subprocess.run([ray_cli, "status", f"--address=127.0.0.1:{port}"], capture_output=True, text=True, timeout=60)
        assert status.returncode == 0, status.stderr  # still up: batch stops only a cluster it started
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, timeout=120)


def test_ray_task_on_a_worker_that_cannot_see_the_files(tmp_path):
    """A worker without the shared storage fails the file with one line saying so (no Ray needed:
    the task function itself, as a worker on another machine would run it)."""
    from deid_edit.cluster import run_task
    from deid_edit.config import AnalyzeConfig, EncodeConfig

    src, dst = tmp_path / "in", tmp_path / "out"
    dst.mkdir()
    item, who = run_task(src / "a.mp4", src, dst, AnalyzeConfig(), None, EncodeConfig(), None, board=None)
    assert item.status == "failed" and "not visible on worker" in item.error
    assert "storage every worker mounts" in item.error and who["pid"] == os.getpid()
    src.mkdir()
    (src / "a.mp4").write_bytes(b"\x00" * 10)
    item, _ = run_task(src / "a.mp4", src, tmp_path / "elsewhere", AnalyzeConfig(), None, EncodeConfig(), None, board=None)
    assert item.status == "failed" and "output folder not visible" in item.error
