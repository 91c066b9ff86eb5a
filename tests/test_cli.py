"""The deid-edit command: CliRunner for each command, the installed console script, and the
--progress json contract the plugins rely on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import decoded

from deid_edit import __version__, load_plan
from deid_edit.cli import cli


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_version():
    r = invoke("--version")
    assert r.exit_code == 0 and __version__ in r.output


def test_analyze_then_render_in_two_modes(sample_clip, tmp_path):
    src, truth = sample_clip
    plan_path = tmp_path / "s.deid.json"
    r = invoke("analyze", str(src), "-o", str(plan_path), "--progress", "none")
    assert r.exit_code == 0, r.output
    plan = load_plan(plan_path)
    assert plan.frame_count == truth.frame_count and plan.tracks
    for mode in ("pixelate", "matte"):
        out = tmp_path / f"{mode}.mp4"
        r = invoke("render", str(src), "--plan", str(plan_path), "--mode", mode, "-o", str(out), "--progress", "none")
        assert r.exit_code == 0, r.output
        assert decoded(out)["frames"] == truth.frame_count
    # the matte is white where the ground-truth face is, black in the corner
    with av.open(str(tmp_path / "matte.mp4")) as c:
        for i, frame in enumerate(c.decode(video=0)):
            img = frame.to_ndarray(format="gray")
            x1, y1, x2, y2 = truth.faces[i][0].astype(int)
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
            assert img[cy - 5 : cy + 5, cx - 5 : cx + 5].min() > 200, i
            assert img[:8, :8].max() < 30


@pytest.mark.slow  # ~3 s
def test_run_default_output_and_saved_plan(sample_clip, tmp_path):
    src = tmp_path / "clip.mp4"
    shutil.copy(sample_clip[0], src)
    r = invoke("run", str(src), "--save-plan", str(tmp_path / "p.json"), "--progress", "none")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "clip.anon.mp4").is_file()
    assert r.output.strip().endswith("clip.anon.mp4")
    assert load_plan(tmp_path / "p.json").frame_count == sample_clip[1].frame_count


def test_models_list_and_verify():
    r = invoke("models", "verify")
    assert r.exit_code == 0 and "ok  centerface" in r.output
    r = invoke("models", "list")
    assert "centerface" in r.output and "MIT" in r.output


@pytest.mark.slow  # ~3.6 s: the CLI in a subprocess
def test_progress_json_contract(sample_clip, tmp_path):
    """Every stdout line is a JSON object; stages count up to their totals; the last names the output
    and says what the saved plan holds."""
    out = tmp_path / "o.mp4"
    plan_path = tmp_path / "o.deid.json"
    args = ["run", str(sample_clip[0]), "-o", str(out), "--save-plan", str(plan_path), "--progress", "json"]
    proc = subprocess.run(
        [sys.executable, "-m", "deid_edit", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    stages = {e["stage"] for e in events}
    assert {"analyze", "render", "done"} <= stages
    for stage in ("analyze", "render"):
        done = [e["done"] for e in events if e["stage"] == stage]
        assert done == sorted(done) and done[-1] == events[[e["stage"] for e in events].index(stage)]["total"]
    plan = load_plan(plan_path)
    assert len(plan.identities) == 2, "the sample clip shows two people, one per shot"
    assert len(plan.tracks) >= len(plan.identities)
    removed = plan.config["metadata_removed"]  # what the output leaves out of the source, as analyze recorded it
    assert isinstance(removed, list) and all(isinstance(r, str) for r in removed)
    assert events[-1] == {
        "stage": "done",
        "output": str(out),
        "faces": 2,  # faces are people: the plan's identities
        "tracks": len(plan.tracks),
        "kept": 0,
        "frames": sample_clip[1].frame_count,
        "metadata_removed": removed,
    }


def test_progress_json_error_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "deid_edit", "run", str(tmp_path / "missing.mp4"), "--progress", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    last = json.loads(proc.stdout.splitlines()[-1])
    assert last["stage"] == "error" and "missing.mp4" in last["message"]


@pytest.mark.slow  # ~3.5 s
def test_installed_console_script(sample_clip, tmp_path):
    """The console script on PATH (installed by `make`) runs from another directory."""
    exe = shutil.which("deid-edit") or str(Path(sys.executable).parent / "deid-edit")
    assert Path(exe).exists(), "deid-edit console script is not installed; run `make install`"
    out = tmp_path / "cs.mp4"
    proc = subprocess.run(
        [exe, "run", str(sample_clip[0]), "-o", str(out), "--mode", "solid", "-q"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    with av.open(str(out)) as c:
        frame = next(iter(c.decode(video=0))).to_ndarray(format="rgb24")
    x1, y1, x2, y2 = sample_clip[1].faces[0][0].astype(int)
    assert np.abs(frame[y1 + 10 : y2 - 10, x1 + 10 : x2 - 10].astype(int)).mean() < 20  # black mask over the face


@pytest.mark.slow  # ~2 s: analyzes again (test_faces.py checks the sheet on the shared plan)
def test_faces_command_writes_contact_sheet(sample_clip, tmp_path):
    r = invoke("faces", str(sample_clip[0]), "-o", str(tmp_path / "sheet"), "--progress", "none")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "sheet" / "contact_sheet.png").is_file()
    assert (tmp_path / "sheet" / "identity_0.png").is_file()
    assert "00:00:00:00" in r.output


@pytest.mark.slow  # ~12 s: two renders and three audits
def test_audit_command_exit_codes(sample_clip, tmp_path):
    src = sample_clip[0]
    blurred = tmp_path / "blurred.mp4"
    assert invoke("run", str(src), "-o", str(blurred), "--progress", "none").exit_code == 0
    r = invoke("audit", str(src), str(blurred), "--json", str(tmp_path / "a.json"), "--progress", "none")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "a.json").read_text())["leaks"] == []
    copy = tmp_path / "copy.mp4"
    shutil.copy(src, copy)
    r = invoke("audit", str(src), str(copy), "--progress", "none")
    assert r.exit_code == 3, r.output
    sheet = tmp_path / "copy.mp4.audit.png"
    assert "uncovered heads" in r.output and sheet.is_file(), "the heads left visible are drawn for a person to check"


def test_run_keep_photo_keeps_only_that_person(sample_clip, tmp_path):
    """--keep with Grace Hopper's photo: her face stays, the astronaut of shot 2 is masked."""
    from deid_edit.sample import GRACE_HOPPER, photo_path

    src, truth = sample_clip
    out = tmp_path / "keep.mp4"
    r = invoke(
        "run",
        str(src),
        "-o",
        str(out),
        "--mode",
        "solid",
        "--color",
        "255,0,255",
        "--keep",
        str(photo_path(GRACE_HOPPER)),
        "--progress",
        "none",
    )
    assert r.exit_code == 0, r.output
    # the editor is told who stays visible, and sees it
    assert "kept visible: 1 track of 1 identity" in r.output and "matches photo 1" in r.output, r.output
    sheet = cv2.imread(str(tmp_path / "keep.mp4.kept.png"))
    assert sheet is not None and sheet.shape[0] > 128
    with av.open(str(out)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            img = frame.to_ndarray(format="rgb24").astype(int)
            x1, y1, x2, y2 = truth.faces[i][0].astype(int)
            core = img[(y1 + y2) // 2 - 10 : (y1 + y2) // 2 + 10, (x1 + x2) // 2 - 10 : (x1 + x2) // 2 + 10]
            magenta = ((core[..., 0] > 200) & (core[..., 1] < 60) & (core[..., 2] > 200)).mean()
            assert (magenta == 0.0) if i < truth.cut_frame else (magenta > 0.95), (i, magenta)


@pytest.mark.slow  # ~2 s: two analyses
def test_weak_hits_flag_reaches_the_tracker(sample_clip, tmp_path):
    """--weak-hits 0 turns weak tracks off (an editor who prefers a clean background); a negative
    count is refused before anything runs."""
    src = sample_clip[0]
    r = invoke("analyze", str(src), "-o", str(tmp_path / "p.json"), "--weak-hits", "0", "--progress", "none")
    assert r.exit_code == 0, r.output
    plan = load_plan(tmp_path / "p.json")
    assert plan.config["track"]["weak_hits"] == 0 and plan.tracks
    r = invoke("analyze", str(src), "-o", str(tmp_path / "q.json"), "--weak-hits", "-1", "--progress", "none")
    assert r.exit_code == 2 and "--weak-hits" in r.output and not (tmp_path / "q.json").exists()


@pytest.mark.slow  # ~4 s
def test_faces_saves_the_plan_and_run_reuses_it(sample_clip, tmp_path, capsys):
    """'faces' saves VIDEO.deid.json; 'run --keep-identity N' then uses it (no second analysis,
    unknown ids refused before anything runs); without a plan, ids are refused before analysis."""
    import shutil

    from conftest import cli_main

    def call(*args: str) -> tuple[int, str]:
        code, out, err = cli_main(capsys, *args)
        return code, out + err

    src = tmp_path / "clip.mp4"
    shutil.copy(sample_clip[0], src)
    code, out = call("run", str(src), "--keep-identity", "0", "--progress", "none")
    assert code == 1 and "deid-edit faces" in out and not (tmp_path / "clip.anon.mp4").exists(), out
    code, out = call("faces", str(src), "--progress", "none")
    assert code == 0, out
    saved = tmp_path / "clip.mp4.deid.json"
    assert saved.is_file()
    code, out = call("run", str(src), "--keep-identity", "7", "--progress", "none")
    assert code == 1 and "identity 7 is not in the plan" in out, out
    stamp = saved.stat().st_mtime_ns
    code, out = call("-v", "run", str(src), "--keep-identity", "0", "--mode", "solid", "--progress", "none")
    assert code == 0, out
    assert "reusing this plan" in out and "kept visible: 1 track" in out, out
    assert saved.stat().st_mtime_ns == stamp and (tmp_path / "clip.anon.mp4.kept.png").is_file()
    # choices left in the saved plan (an editor's "keep") are not reused by 'run': only its flags choose
    data = json.loads(saved.read_text())
    for ident in data["identities"]:
        ident["action"] = "keep"
    saved.write_text(json.dumps(data))
    code, out = call("run", str(src), "-o", str(tmp_path / "all.mp4"), "--progress", "json")
    done = json.loads(out.strip().splitlines()[-1])
    assert code == 0 and done["stage"] == "done" and done["kept"] == 0, out


@pytest.mark.slow  # ~1.5-2 s: two runs
def test_run_ends_with_one_line_saying_what_happened(sample_clip, tmp_path, capsys):
    """faces found, tracks, kept, output path; --mode debug warns first that faces stay visible."""
    import re

    from conftest import cli_main

    out = tmp_path / "out.mp4"
    code, stdout, stderr = cli_main(capsys, "run", str(sample_clip[0]), "-o", str(out), "--progress", "none", "--preset", "ultrafast")
    assert code == 0, stderr
    last = stdout.strip().splitlines()[-1]
    m = re.fullmatch(r"(\d+) faces? found \((\d+) tracks?\), 0 tracks kept visible: (.+)", last)
    assert m and int(m[1]) >= 2 and int(m[2]) >= int(m[1]) and m[3] == str(out), last  # two people, one per shot
    assert "WARNING" not in stderr

    debug = tmp_path / "debug.mp4"
    code, stdout, stderr = cli_main(capsys, "run", str(sample_clip[0]), "-o", str(debug), "--mode", "debug", "--progress", "none")
    assert code == 0, stderr
    assert "--mode debug leaves every face visible" in stderr
    assert stdout.strip().splitlines()[-1].endswith(f"ALL faces left visible (--mode debug, for review only): {debug}")
