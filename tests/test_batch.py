"""Batch over a folder tree: probing, mirroring, summary, resume, failures, parallel jobs."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from conftest import decoded

from deid_edit.cli import main


def run_cli(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.mark.slow  # ~9 s: three clips
def test_batch_tree(sample_clip, vfr_clip, tmp_path, capsys):
    src = tmp_path / "in"
    (src / "day1" / "cam").mkdir(parents=True)
    (src / "day2").mkdir()
    shutil.copy(sample_clip[0], src / "day1" / "cam" / "a.mp4")
    shutil.copy(vfr_clip[0], src / "day2" / "b.mov.bin")  # a video with a misleading extension
    shutil.copy(sample_clip[0], src / "day2" / "c.mp4")
    (src / "day2" / "notes.mp4").write_text("not a video")  # probed, not picked
    (src / "readme.txt").write_text("hello")
    out = tmp_path / "out"
    (out / "day2" / "c.mp4").mkdir(parents=True)  # makes this one file fail: output path is a folder

    code = run_cli("batch", str(src), "-o", str(out), "--jobs", "2", "--progress", "none", "--preset", "ultrafast")
    assert code == 1, "a failed file must make the batch exit non-zero"
    assert (out / "day1" / "cam" / "a.mp4").is_file()
    assert decoded(out / "day1" / "cam" / "a.mp4")["frames"] == sample_clip[1].frame_count
    assert decoded(out / "day2" / "b.mov.bin.mp4")["frames"] == vfr_clip[1].frame_count
    assert not (out / "day2" / "notes.mp4").exists()
    summary = json.loads((out / "deid-edit-summary.json").read_text())["files"]
    status = {r["file"].split("in/")[1]: r for r in summary}
    # every file under the input folder has a row with a status and a reason
    assert set(status) == {"day1/cam/a.mp4", "day2/b.mov.bin", "day2/c.mp4", "day2/notes.mp4", "readme.txt"}
    assert status["day1/cam/a.mp4"]["status"] == "done" and status["day1/cam/a.mp4"]["faces"] >= 1
    assert status["day2/c.mp4"]["status"] == "failed" and "c.mp4" in status["day2/c.mp4"]["error"]
    assert status["day2/notes.mp4"]["status"] == "not a video" and "text" in status["day2/notes.mp4"]["error"]
    assert status["readme.txt"]["status"] == "not a video"
    rows = list(csv.DictReader((out / "deid-edit-summary.csv").open()))
    assert {r["status"] for r in rows} == {"done", "failed", "not a video"}
    captured = capsys.readouterr()
    assert "c.mp4" in captured.err
    assert "5 files: 2 done, 0 skipped, 1 failed, 2 not videos" in captured.out

    # resume: finished outputs are skipped, the failed one is retried (and now works)
    (out / "day2" / "c.mp4").rmdir()
    before = (out / "day1" / "cam" / "a.mp4").stat().st_mtime_ns
    code = run_cli("batch", str(src), "-o", str(out), "--progress", "none", "--preset", "ultrafast")
    assert code == 0
    summary = {r["file"].split("in/")[1]: r["status"] for r in json.loads((out / "deid-edit-summary.json").read_text())["files"]}
    assert summary == {
        "day1/cam/a.mp4": "skipped",
        "day2/b.mov.bin": "skipped",
        "day2/c.mp4": "done",
        "day2/notes.mp4": "not a video",
        "readme.txt": "not a video",
    }
    assert (out / "day1" / "cam" / "a.mp4").stat().st_mtime_ns == before


@pytest.mark.slow  # ~2.6 s
def test_batch_keep_photo_applies_per_file(sample_clip, tmp_path):
    """--keep in a batch: each file decides per track as 'run' does; the summary lists the kept
    tracks and each output gets its OUT.kept.png; a photo without a face stops the batch first."""
    import cv2
    import numpy as np

    from deid_edit.sample import GRACE_HOPPER, photo_path

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(sample_clip[0], src / "a.mp4")
    out = tmp_path / "out"
    code = run_cli(
        "batch", str(src), "-o", str(out), "--progress", "none", "--preset", "ultrafast", "--keep", str(photo_path(GRACE_HOPPER))
    )
    assert code == 0
    (row,) = json.loads((out / "deid-edit-summary.json").read_text())["files"]
    assert row["status"] == "done" and row["kept"] not in ("", "none"), row
    assert cv2.imread(str(out / "a.mp4.kept.png")) is not None
    wall = tmp_path / "wall.png"
    cv2.imwrite(str(wall), np.full((200, 200, 3), 127, np.uint8))
    code = run_cli("batch", str(src), "-o", str(tmp_path / "out2"), "--progress", "none", "--keep", str(wall))
    assert code != 0 and not (tmp_path / "out2" / "a.mp4").exists()
    assert run_cli("batch", str(src), "-o", str(tmp_path / "out3"), "--keep-identity", "1") == 2


@pytest.mark.slow  # ~4.5 s
def test_batch_accounts_for_every_file(sample_clip, tmp_path, capsys):
    """Two clips, a text file named notes.mp4 and a truncated mp4: all four in the summary, the CSV
    and the terminal; the truncated one is failed (with why), never silently missing."""
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(sample_clip[0], src / "one.mp4")
    shutil.copy(sample_clip[0], src / "two.mp4")
    (src / "notes.mp4").write_text("interview notes: call back on Tuesday\n")
    data = sample_clip[0].read_bytes()
    (src / "cut.mp4").write_bytes(data[: len(data) // 2])  # the moov atom is at the end: cut off
    out = tmp_path / "out"
    code = run_cli("batch", str(src), "-o", str(out), "--progress", "none", "--preset", "ultrafast")
    assert code == 1
    rows = {r["file"].rsplit("/", 1)[1]: r for r in csv.DictReader((out / "deid-edit-summary.csv").open())}
    assert set(rows) == {"one.mp4", "two.mp4", "notes.mp4", "cut.mp4"}
    assert rows["one.mp4"]["status"] == rows["two.mp4"]["status"] == "done"
    assert rows["notes.mp4"]["status"] == "not a video" and rows["notes.mp4"]["error"]
    assert rows["cut.mp4"]["status"] == "failed" and "cut.mp4" in rows["cut.mp4"]["error"] and "truncated" in rows["cut.mp4"]["error"]
    assert all(r["error"] for name, r in rows.items() if name not in ("one.mp4", "two.mp4"))
    captured = capsys.readouterr()
    assert "4 files: 2 done, 0 skipped, 1 failed, 1 not videos" in captured.out
    assert "notes.mp4" in captured.out and "cut.mp4" in captured.err
    assert not (out / "cut.mp4").exists() and not (out / "notes.mp4").exists()
