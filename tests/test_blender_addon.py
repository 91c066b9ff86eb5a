"""The Blender VSE add-on (plugins/blender): its bpy-free runner here, and the real add-on inside the bpy wheel.

The runner tests use fake child scripts for exact timing (progress, cancel) and the real
``deid-edit run`` for the contract. The Blender tests run scripts from tests/blender under
``.venv-bpy/bin/python`` (made by ``make .venv-bpy``, which ``make test`` depends on): they
validate and build the extension with Blender's own ``blender_ext.py``, install the zip through
``bpy.ops.extensions.package_install_files``, run the operator's blocking path on trimmed strips,
and enable/disable the legacy add-on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from conftest import footage

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "blender"
HELPERS = Path(__file__).resolve().parent / "blender"
BPY_VENV = ROOT / ".venv-bpy"
BPY_PY = BPY_VENV / "bin" / "python"


def _load(name: str) -> ModuleType:
    """Import a bpy-free module of the add-on by path (the package's __init__ imports bpy)."""
    spec = importlib.util.spec_from_file_location(f"deid_blender_{name}", PLUGIN / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


runner = _load("runner")
compat = _load("compat")


def _cli() -> str:
    """The deid-edit console script of the venv running the tests (installed editable by the Makefile)."""
    path = Path(sys.executable).with_name("deid-edit")
    return str(path) if path.exists() else runner.resolve_cli("deid-edit")


def _fake_child(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text("import json, signal, sys, time\n" + textwrap.dedent(body))
    return [sys.executable, str(script)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- runner: pure functions ----------------------------------------------------------------------


def test_parse_line_accepts_only_stage_objects() -> None:
    assert runner.parse_line('{"stage": "analyze", "done": 3, "total": 40}\n') == {"stage": "analyze", "done": 3, "total": 40}
    assert runner.parse_line(b'{"stage": "done", "output": "/x.mp4", "faces": 2}') == {"stage": "done", "output": "/x.mp4", "faces": 2}
    for noise in ("", "hello", "{not json", '{"done": 1}', '["stage"]', '{"stage": 5}', "[1, 2]"):
        assert runner.parse_line(noise) is None, noise


def test_stage_fraction_and_overall_progress() -> None:
    assert runner.stage_fraction({"stage": "analyze", "done": 30, "total": 40}) == pytest.approx(0.75)
    assert runner.stage_fraction({"stage": "render", "done": 50, "total": 40}) == 1.0
    assert runner.stage_fraction({"stage": "render", "done": 0, "total": 0}) is None
    assert runner.stage_fraction({"stage": "done", "output": "x"}) is None

    batch = runner.Batch([runner.Task("a", "a.out"), runner.Task("b", "b.out")], argv_for=lambda t: [])
    assert batch.fraction == 0.0
    batch._absorb({"stage": "analyze", "done": 20, "total": 40})
    assert batch.fraction == pytest.approx(0.35 / 2)  # analyze spans the first 70 % of a clip; 2 clips
    batch._absorb({"stage": "render", "done": 40, "total": 40})
    assert batch.fraction == pytest.approx(0.5)
    batch._absorb({"stage": "something-new", "done": 1, "total": 10})  # unknown stage: never goes backwards
    assert batch.fraction == pytest.approx(0.5)
    assert batch.status_text() == "clip 1/2 something-new 1/10"  # the text follows the current stage


def test_error_message_prefers_the_cli_message() -> None:
    json_error = [{"stage": "analyze", "done": 1, "total": 2}, {"stage": "error", "message": "x.mp4: no such file; check the path"}]
    stderr = ["deid-edit: error: from stderr"]
    assert runner.error_message(json_error, stderr, 1) == "x.mp4: no such file; check the path"
    assert runner.error_message([], ["some log", "deid-edit: error: from stderr", ""], 1) == "from stderr"
    assert runner.error_message([], ["Usage: deid-edit run ...", "Error: No such option: --bogus"], 2) == "No such option: --bogus"
    assert runner.error_message([], ["Traceback ...", "ZeroDivisionError: boom"], 1) == "ZeroDivisionError: boom"
    assert "usage error" in runner.error_message([], [], 2)
    assert runner.error_message([], [], 7) == "the CLI exited with code 7"


def test_build_command_output_path_and_resolve(tmp_path: Path) -> None:
    out = runner.output_path("/footage/take 1.mov", "solid")
    assert out == Path("/footage/take 1.deid-solid.mov")
    assert runner.output_path("/footage/a.mp4", "blur", tmp_path) == tmp_path / "a.deid-blur.mp4"
    cmd = runner.build_command("/bin/deid-edit", "/f/a.mp4", out, "solid", keep=["/p/k1.jpg", "/p/k2.jpg"], only=["/p/o.jpg"])
    assert cmd[:6] == ["/bin/deid-edit", "run", "/f/a.mp4", "-o", str(out), "--mode"]
    assert cmd[6:9] == ["solid", "--progress", "json"]  # no --force unless asked: never overwrite a file that is not ours
    assert cmd[9:] == ["--keep", "/p/k1.jpg", "--keep", "/p/k2.jpg", "--only", "/p/o.jpg"]
    assert runner.build_command("deid-edit", "a", "b", "blur", force=True)[6:9] == ["blur", "--force", "--progress"]
    with pytest.raises(runner.RunnerError, match="unknown mode"):
        runner.build_command("deid-edit", "a", "b", "debug")

    assert runner.resolve_cli(_cli()) == os.path.abspath(_cli())
    with pytest.raises(runner.RunnerError, match="not on PATH"):
        runner.resolve_cli("deid-edit-definitely-missing")
    not_exec = tmp_path / "deid-edit"
    not_exec.write_text("#!/bin/sh\n")
    with pytest.raises(runner.RunnerError, match="not executable"):
        runner.resolve_cli(str(not_exec))
    env = runner.child_env({"PATH": "/bin", "PYTHONHOME": "/blender/python", "PYTHONPATH": "/blender/lib"})
    assert env == {"PATH": "/bin", "PYTHONUNBUFFERED": "1"}


def test_choose_output_overwrites_only_our_own_output_for_the_same_source(tmp_path: Path) -> None:
    """The re-run rule for files: our earlier output for this source is reused (--force); anything else gets -2, -3."""
    deid = tmp_path / "deid"
    deid.mkdir()
    src_a, src_b = tmp_path / "cardA" / "C0001.mp4", tmp_path / "cardB" / "C0001.mp4"
    key = runner.path_key
    # nothing there: the plain name, nothing to overwrite
    assert runner.choose_output(src_a, "blur", deid, {}) == (deid / "C0001.deid-blur.mp4", False)
    # a file the add-on did not write (the editor's own, or another project's): never overwritten
    (deid / "C0001.deid-blur.mp4").write_bytes(b"editor's file")
    assert runner.choose_output(src_a, "blur", deid, {}) == (deid / "C0001.deid-blur-2.mp4", False)
    # our own earlier output for this source: reused and overwritten
    owned = {key(deid / "C0001.deid-blur-2.mp4"): key(src_a)}
    (deid / "C0001.deid-blur-2.mp4").write_bytes(b"ours")
    assert runner.choose_output(src_a, "blur", deid, owned) == (deid / "C0001.deid-blur-2.mp4", True)
    # the same file name from another card: ours, but for another source, so not touched
    assert runner.choose_output(src_b, "blur", deid, owned) == (deid / "C0001.deid-blur-3.mp4", False)
    # recorded as ours but deleted since: reused without --force
    (deid / "C0001.deid-blur-2.mp4").unlink()
    assert runner.choose_output(src_a, "blur", deid, owned) == (deid / "C0001.deid-blur-2.mp4", False)
    # the mode is in the name: another mode never meets the blur files
    assert runner.choose_output(src_a, "solid", deid, owned) == (deid / "C0001.deid-solid.mp4", False)


# -- runner: child processes ---------------------------------------------------------------------


def test_batch_streams_progress_and_reports_each_clip(tmp_path: Path) -> None:
    """A fake CLI: progress lines with noise, then done; a second task fails with an error line, a third cannot start."""
    child = _fake_child(
        tmp_path,
        """
        if sys.argv[1] == "fail":
            print(json.dumps({"stage": "error", "message": "bad input"}), flush=True)
            print("deid-edit: error: bad input", file=sys.stderr)
            sys.exit(1)
        print("a stray library line", flush=True)
        for i in range(11):
            print(json.dumps({"stage": "analyze", "done": i, "total": 10}), flush=True)
            time.sleep(0.01)
        for i in range(6):
            print(json.dumps({"stage": "render", "done": i, "total": 5}), flush=True)
        print(json.dumps({"stage": "done", "output": sys.argv[2], "faces": 2, "kept": 0, "frames": 10}), flush=True)
        """,
    )
    tasks = [runner.Task("ok", "/out/ok.mp4"), runner.Task("fail", "/out/fail.mp4"), runner.Task("missing", "/out/m.mp4")]

    def argv_for(task: runner.Task) -> list[str]:
        return [*child, task.source, task.output] if task.source != "missing" else ["/nonexistent/deid-edit"]

    seen: list[tuple[str, bool]] = []
    fractions: list[float] = []
    batch = runner.Batch(tasks, argv_for, on_result=lambda t, r: seen.append((t.source, r.ok)))
    results = batch.run(poll_interval=0.01, on_progress=lambda b: fractions.append(b.fraction))

    assert seen == [("ok", True), ("fail", False), ("missing", False)]
    ok, fail, missing = (r for _, r in results)
    assert ok.output == "/out/ok.mp4" and ok.summary["faces"] == 2 and ok.returncode == 0
    assert fail.message == "bad input" and fail.returncode == 1
    assert "could not start /nonexistent/deid-edit" in missing.message
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(0.0 < f < 1 / 3 for f in fractions), "progress inside the first clip was never shown"
    assert batch.finished and not batch.cancelled and batch.status_text() == "done"


# sigkill-after-grace is slow: ~3 s of waiting out the grace
@pytest.mark.parametrize("ignores_sigint", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["sigint", "sigkill-after-grace"])
def test_cancel_kills_the_child(tmp_path: Path, ignores_sigint: bool) -> None:
    child = _fake_child(
        tmp_path,
        f"""
        if {ignores_sigint}:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(json.dumps({{"stage": "analyze", "done": 1, "total": 100}}), flush=True)
        time.sleep(60)
        """,
    )
    results: list[runner.Result] = []
    batch = runner.Batch([runner.Task("a", "a.out"), runner.Task("b", "b.out")], lambda t: child, on_result=lambda t, r: results.append(r))
    deadline = time.monotonic() + 20
    while batch.stage != "analyze" and time.monotonic() < deadline:
        batch.step()
        time.sleep(0.01)
    assert batch.stage == "analyze", "the fake child never reported progress"
    job = batch.job
    assert job is not None and _alive(job.pid)

    started = time.monotonic()
    batch.cancel()
    assert time.monotonic() - started < 10
    assert job.returncode is not None and not _alive(job.pid)
    assert batch.finished and batch.cancelled and batch.status_text() == "cancelled"
    assert [r.cancelled for _, r in batch.results] == [True] and results == []  # second clip never started, no callback
    assert batch.step() == []


@pytest.mark.slow  # ~6 s
def test_real_cli_run_error_and_cancel(tmp_path: Path, sample_clip: tuple[Path, object]) -> None:
    """The real ``deid-edit run``: a good clip, a missing one (CLI error), and a run killed mid-way leaves no output."""
    clip = tmp_path / "clip.mp4"
    shutil.copy(sample_clip[0], clip)
    cli = runner.resolve_cli(_cli())
    tasks = [
        runner.Task(str(clip), str(runner.output_path(clip, "blur"))),
        runner.Task(str(tmp_path / "gone.mp4"), str(tmp_path / "o.mp4")),
    ]
    stages: list[str] = []
    batch = runner.Batch(tasks, lambda t: runner.build_command(cli, t.source, t.output, "blur"))
    results = batch.run(on_progress=lambda b: stages.append(b.stage))

    good, bad = (r for _, r in results)
    assert good.ok, good.message
    assert Path(good.output) == tmp_path / "clip.deid-blur.mp4" and Path(good.output).stat().st_size > 0
    assert good.summary["frames"] == 40 and good.summary["faces"] >= 1
    assert {"analyze", "render"} <= set(stages)
    assert not bad.ok and bad.returncode == 1 and "gone.mp4" in bad.message and "no such file" in bad.message

    target = tmp_path / "cancelled.mp4"
    job = runner.Job(runner.build_command(cli, str(clip), str(target), "pixelate"))
    deadline = time.monotonic() + 60
    while not any(e.get("stage") == "analyze" for e in job.events) and not job.finished() and time.monotonic() < deadline:
        job.poll()
        time.sleep(0.02)
    assert not job.finished(), "the CLI finished before it could be cancelled"
    code = job.cancel(grace=10)
    assert code == 130, (code, list(job.stderr_tail))  # SIGINT reached the CLI, which exits 130 after removing its temp file
    assert not _alive(job.pid)
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.deid-blur.mp4", "clip.mp4"]
    assert job.result().cancelled


# -- compat: strip placement (duck-typed, so fakes stand in for bpy strips) ----------------------


def _strip(name: str, channel: int, start: int, end: int, kind: str = "MOVIE", select: bool = False) -> SimpleNamespace:
    return SimpleNamespace(name=name, type=kind, select=select, channel=channel, frame_final_start=start, frame_final_end=end)


def test_free_channel_and_selection() -> None:
    a, b = _strip("a", 2, 10, 50), _strip("b", 3, 40, 60)
    assert compat.free_channel([a, b], 3, 10, 40) == 3  # touching at frame 40 is not an overlap
    assert compat.free_channel([a, b], 3, 10, 41) == 4
    assert compat.free_channel([a, b], 2, 0, 10) == 2
    assert compat.free_channel([_strip(str(c), c, 0, 9) for c in range(1, 129)], 1, 0, 5) is None

    late, early, color = (
        _strip("late", 1, 50, 60, select=True),
        _strip("early", 1, 0, 10, select=True),
        _strip("c", 1, 20, 30, "COLOR", True),
    )
    assert compat.selected_movie_strips([late, color, early, _strip("unselected", 1, 70, 80)]) == [early, late]


class _FakeStrip(SimpleNamespace):
    """A duck-typed strip with Blender's custom-property access (``strip.get``/``strip[key] = value``)."""

    def __init__(self, name: str, channel: int, start: int, end: int, filepath: str, **props: str) -> None:
        super().__init__(name=name, type="MOVIE", channel=channel, frame_final_start=start, frame_final_end=end, filepath=filepath)
        self.props = dict(props)

    def get(self, key: str) -> str | None:
        return self.props.get(key)

    def __setitem__(self, key: str, value: str) -> None:
        self.props[key] = value

    def __eq__(self, other: object) -> bool:
        return self is other

    __hash__ = object.__hash__


def test_outputs_are_recognised_and_mapped_back_to_their_original() -> None:
    """The re-run rule for strips: a copy is never anonymized again; its original is found, also after a rename."""
    same = str  # paths in these fakes are already absolute
    original = _FakeStrip("clip", 1, 10, 50, "/f/clip.mp4")
    copy = _FakeStrip("clip.deid-blur", 2, 10, 50, "/p/deid/clip.deid-blur.mp4")
    compat.mark_output(copy, "/f/clip.mp4", "blur", "clip")
    assert copy.props == {"deid_edit_source": "/f/clip.mp4", "deid_edit_mode": "blur", "deid_edit_original": "clip"}
    bystander = _FakeStrip("other", 3, 10, 50, "/f/other.mp4")
    strips = [original, copy, bystander]
    assert [compat.is_output(s, same) for s in strips] == [False, True, False]
    assert compat.find_original(strips, copy, same) is original
    original.name = "renamed by the editor"  # the recorded name is gone: same frames below, same source
    assert compat.find_original(strips, copy, same) is original
    original.channel = 5  # no longer below the copy, and the name does not match: not guessed
    assert compat.find_original(strips, copy, same) is None

    # Fallbacks without the properties (a copy from an older version, or properties cleared):
    assert compat.is_output(_FakeStrip("x", 1, 0, 9, "/f/interview.deid-pixelate-2.mov"), same)  # output file name
    assert compat.is_output(_FakeStrip("interview.deid-solid.001", 1, 0, 9, "/f/anything.mov"), same)  # added-copy strip name
    assert compat.is_output(_FakeStrip("interview.deid", 1, 0, 9, "/f/anything.mov"), same)  # as an older version named it
    assert compat.is_output(_FakeStrip("x", 1, 0, 9, "/p/deid/x.mov"), same, folders=("/p/deid",))  # the default deid/ folder
    assert not compat.is_output(_FakeStrip("x", 1, 0, 9, "/p/deid/x.mov"), same)
    assert not compat.is_output(_FakeStrip("deidre", 1, 0, 9, "/f/deid-blur.mp4"), same)  # look-alikes are footage
    legacy_original = _FakeStrip("take", 1, 0, 40, "/f/take.mp4")
    legacy_copy = _FakeStrip("take.deid", 2, 0, 40, "/f/take.deid-solid.mp4")
    assert compat.find_original([legacy_original, legacy_copy], legacy_copy, same) is legacy_original
    assert compat.find_original([legacy_copy], legacy_copy, same) is None


def test_previous_copies_are_those_of_the_same_original_and_mode() -> None:
    same = str
    original = _FakeStrip("clip", 1, 10, 50, "/f/clip.mp4")
    blur = _FakeStrip("clip.deid-blur", 2, 10, 50, "/p/deid/clip.deid-blur.mp4")
    compat.mark_output(blur, "/f/clip.mp4", "blur", "clip")
    solid = _FakeStrip("clip.deid-solid", 3, 10, 50, "/p/deid/clip.deid-solid.mp4")
    compat.mark_output(solid, "/f/clip.mp4", "solid", "clip")
    other_cut = _FakeStrip("clip.001", 1, 100, 140, "/f/clip.mp4")  # the same file cut in again elsewhere
    other_copy = _FakeStrip("clip.001.deid-blur", 2, 100, 140, "/p/deid/clip.deid-blur.mp4")
    compat.mark_output(other_copy, "/f/clip.mp4", "blur", "clip.001")
    legacy = _FakeStrip("clip.deid", 4, 10, 50, "/f/clip.deid-blur.mp4")  # made by 0.1.0: no properties, old name
    strips = [original, blur, solid, other_cut, other_copy, legacy]
    assert compat.previous_copies(strips, original, "/f/clip.mp4", "blur", same) == [blur, legacy]
    assert compat.previous_copies(strips, original, "/f/clip.mp4", "solid", same) == [solid]
    assert compat.previous_copies(strips, other_cut, "/f/clip.mp4", "blur", same) == [other_copy]
    assert compat.previous_copies(strips, original, "/f/clip.mp4", "matte", same) == []


# -- real Blender (PyPI bpy wheel in .venv-bpy) --------------------------------------------------


def _bpy_python() -> Path:
    if not BPY_PY.exists():
        pytest.skip(f"needs the bpy venv at {BPY_VENV} (create it with `make .venv-bpy`; `make test` always does)")
    return BPY_PY


def _blender_ext() -> Path:
    """Blender's own extension CLI, shipped inside the bpy wheel."""
    found = sorted(BPY_VENV.glob("lib/python*/site-packages/bpy/*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    assert found, f"blender_ext.py not found in {BPY_VENV}; is the bpy wheel installed there?"
    return found[-1]


def _run_bpy(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(_bpy_python()), *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args[0]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def extension_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Validate plugins/blender and build the extension zip with ``blender_ext.py`` (what ``blender --command extension`` runs)."""
    python, ext = _bpy_python(), _blender_ext()
    out = tmp_path_factory.mktemp("extension")
    validate = subprocess.run([str(python), str(ext), "validate", str(PLUGIN)], capture_output=True, text=True, timeout=120)
    assert validate.returncode == 0 and "Success" in validate.stdout, validate.stdout + validate.stderr
    build = subprocess.run(
        [str(python), str(ext), "build", "--source-dir", str(PLUGIN), "--output-dir", str(out)], capture_output=True, text=True, timeout=120
    )
    assert build.returncode == 0, build.stdout + build.stderr
    zips = list(out.glob("*.zip"))
    assert [z.name for z in zips] == ["deid_edit_vse-0.1.0.zip"], build.stdout
    return zips[0]


def test_extension_validates_and_builds(extension_zip: Path) -> None:
    names = set(zipfile.ZipFile(extension_zip).namelist())
    assert {"blender_manifest.toml", "__init__.py", "runner.py", "compat.py", "operators.py", "ui.py"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    check = subprocess.run([str(_bpy_python()), str(_blender_ext()), "validate", str(extension_zip)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.slow  # ~17 s (generated clip), ~24 s (phone_selfie): Blender installs the extension and renders
@pytest.mark.parametrize("footage_name", ["", pytest.param("phone_selfie.mp4", marks=pytest.mark.media)])
def test_extension_install_and_anonymize_trimmed_strips(
    tmp_path: Path, extension_zip: Path, sample_clip: tuple[Path, object], footage_name: str
) -> None:
    """Install the zip like a user, run the operator's blocking path on the real CLI, check where the results sit.

    Unsaved .blend: refused. Saved: results in deid/ beside the .blend (not the footage folder).
    Running again with the copies selected re-anonymizes the originals and replaces the copies:
    still one copy per original, the same file overwritten, nothing anonymized twice. Run on the
    generated sample and on phone_selfie.mp4 (an MP4 edit list hides one of its 32 frames).
    """
    clip = tmp_path / "media" / "clip.mp4"
    clip.parent.mkdir()
    shutil.copy(footage(footage_name) if footage_name else sample_clip[0], clip)
    out_json = tmp_path / "facts.json"
    proc = _run_bpy(
        [str(HELPERS / "extension_roundtrip.py"), str(extension_zip), _cli(), str(clip), str(out_json)],
        env={"BLENDER_USER_RESOURCES": str(tmp_path / "user")},
    )
    facts = json.loads(out_json.read_text())
    assert facts["install"] == ["FINISHED"] and facts["enabled"] and facts["has_operator"], proc.stdout
    assert "ui.py" in facts["installed_files"]

    assert facts["unsaved_run"] is None and "Save the .blend file first" in facts["unsaved_message"]
    assert facts["unsaved_strip_count_delta"] == 0

    assert facts["run"] == ["FINISHED"]
    deid = tmp_path / "project" / "deid"
    expected_path = str(deid / "clip.deid-pixelate.mp4")  # mode from the preferences (pixelate), in deid/ beside the .blend
    assert Path(expected_path).stat().st_size > 0
    assert sorted(p.name for p in clip.parent.iterdir()) == ["clip.mp4"]  # nothing written into the footage folder
    assert facts["deid_files"] == ["clip.deid-pixelate.mp4"]  # two strips of one file: one CLI run, one file
    new = facts["new"]
    assert sorted(new) == ["blocked.deid-pixelate", "trimmed.deid-pixelate"]
    # one channel above; "blocked" has a colour strip on the channel above, so its copy goes one higher
    for name, channel in (("trimmed", 3), ("blocked", 4)):
        original, copy = facts["originals_after"][name], new[f"{name}.deid-pixelate"]
        assert copy["type"] == "MOVIE" and copy["channel"] == channel and copy["filepath"] == expected_path
        assert copy["raw_filepath"] == "//deid/clip.deid-pixelate.mp4"  # relative: the project folder can move
        assert copy["props"] == {"deid_edit_source": str(clip), "deid_edit_mode": "pixelate", "deid_edit_original": name}
        for key in ("frame_start", "frame_offset_start", "frame_final_start", "frame_final_end"):
            assert copy[key] == original[key], (name, key, copy, original)
        # Blender counts phone_selfie's hidden 32nd frame; the render plays 31: the copy holds its last one
        assert copy["frame_offset_end"] == original["frame_offset_end"] - (1 if footage_name else 0)
        # untouched but muted (saving the .blend made its path relative: //../media/clip.mp4, the same file)
        assert original == {**facts["originals_before"][name], "mute": True, "raw_filepath": "//../media/clip.mp4"}
        assert not copy["mute"]
    frames = 32 if footage_name else sample_clip[1].frame_count  # phone_selfie: the 32 Blender counts (31 shown + a hold)
    assert (new["trimmed.deid-pixelate"]["frame_final_start"], new["trimmed.deid-pixelate"]["frame_final_end"]) == (15, 10 + frames - 7)
    assert facts["originals_after"]["bystander"] == {**facts["originals_before"]["bystander"], "raw_filepath": "//../media/clip.mp4"}
    assert facts["selected"] == ["blocked.deid-pixelate", "trimmed.deid-pixelate"]

    # The re-run from the selected copies: the same two copies, same places, the file rewritten in place.
    assert facts["rerun"] == ["FINISHED"]
    strips = facts["rerun_strips"]
    assert sorted(strips) == ["blocked", "blocked.deid-pixelate", "bystander", "occupant", "trimmed", "trimmed.deid-pixelate"]
    assert not any(".deid" in s["filepath"].replace(".deid-pixelate.mp4", "") for s in strips.values() if s["filepath"])
    for name in ("trimmed.deid-pixelate", "blocked.deid-pixelate"):
        assert strips[name] == new[name], name
    assert facts["rerun_selected"] == ["blocked.deid-pixelate", "trimmed.deid-pixelate"]
    assert facts["rerun_deid_files"] == ["clip.deid-pixelate.mp4"]
    assert facts["rerun_rewritten"] == {"clip.deid-pixelate.mp4": True}  # our own output: overwritten (--force)

    assert facts["error_run"] is None and "no such photo" in facts["error_message"] and "nobody.jpg" in facts["error_message"]
    assert facts["error_strip_count_delta"] == 0
    assert not facts["bystander_after_error"]["mute"]


@pytest.mark.slow  # ~4 s
def test_legacy_addon_enable_errors_rerun_rules_cancel_and_disable(tmp_path: Path, sample_clip: tuple[Path, object]) -> None:
    """The same folder as a legacy add-on (bl_info) in scripts/addons/deid_edit_vse.

    Registers; reports user errors (nothing selected, unsaved .blend with the default //deid/ folder,
    missing CLI); writes to the preference folder without touching a file that is not its own; on
    re-runs from the selected copy maps back to the original, replaces the copy and overwrites only
    its own file; Esc and the Cancel button stop the job while other keys pass through; unregisters.
    """
    addons = tmp_path / "scripts" / "addons"
    shutil.copytree(PLUGIN, addons / "deid_edit_vse", ignore=shutil.ignore_patterns("__pycache__"))
    out_json = tmp_path / "facts.json"
    log = tmp_path / "fake-calls.jsonl"
    fake_cli = tmp_path / "fake-deid-edit"
    fake_cli.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            """
            import json, os, shutil, sys, time
            args = sys.argv[1:]
            with open(os.environ["DEID_FAKE_LOG"], "a") as fh:
                fh.write(json.dumps(args) + "\\n")
            video, out, mode = args[1], args[args.index("-o") + 1], args[args.index("--mode") + 1]
            if os.path.exists(out) and "--force" not in args:  # what the real CLI does
                print(json.dumps({"stage": "error", "message": out + ": already exists; use --force"}), flush=True)
                sys.exit(1)
            for i in range(6):
                print(json.dumps({"stage": "analyze", "done": i, "total": 5}), flush=True)
                time.sleep(0.05)
            if mode == "matte":
                time.sleep(60)  # long enough that only a cancel ends it
            print(json.dumps({"stage": "render", "done": 5, "total": 5}), flush=True)
            shutil.copy(video, out)
            print(json.dumps({"stage": "done", "output": out, "faces": 2, "kept": 0, "frames": 40}), flush=True)
            """
        )
    )
    fake_cli.chmod(0o755)
    clip = tmp_path / "clip.mp4"
    shutil.copy(sample_clip[0], clip)
    out = tmp_path / "out"
    _run_bpy(
        [str(HELPERS / "legacy_addon.py"), str(clip), str(out_json), str(fake_cli)],
        env={
            "BLENDER_USER_SCRIPTS": str(tmp_path / "scripts"),
            "BLENDER_USER_RESOURCES": str(tmp_path / "user"),
            "DEID_FAKE_LOG": str(log),
        },
    )
    facts = json.loads(out_json.read_text())
    assert Path(facts["module_file"]) == addons / "deid_edit_vse" / "__init__.py"
    assert facts["bl_info_name"] == "deid-edit Face Anonymizer"
    assert facts["enabled"] and facts["has_operator"] and facts["has_panel"]
    assert facts["prefs"] == {"cli_path": "deid-edit", "default_mode": "blur", "mute_original": True, "output_dir": "//deid/"}
    assert facts["scene_settings_mode"] == "PREFERENCES"
    assert "Select one or more movie strips" in facts["nothing_selected"]["error"]
    assert "Save the .blend file first" in facts["unsaved_default_folder"]["error"]
    assert "deid/ folder beside it" in facts["unsaved_default_folder"]["error"]
    assert "/nonexistent/deid-edit" in facts["missing_cli"]["error"] and "preferences" in facts["missing_cli"]["error"]
    assert facts["strip_count"] == 1 and facts["mute_after_errors"] is False

    # First run (modal): into the preference folder; the editor's own clip.deid-solid.mp4 is left alone.
    done = facts["modal_finish"]
    assert done["start"] == ["RUNNING_MODAL"] and done["timers_while_running"] == 1 and done["handler_is_op"] and done["running_flag"]
    assert done["mouse_move"] == ["PASS_THROUGH"]  # the editor stays usable while the CLI runs
    # the end comes on a timer tick, which may be another operator's: passed on
    assert done["end"] == ["FINISHED", "PASS_THROUGH"] and done["timers_after"] == 0 and not done["running_after"]
    assert done["fractions"] == sorted(done["fractions"]) and any(0 < f < 1 for f in done["fractions"]), done["fractions"]
    assert done["new"] == {"clip.deid-solid": [2, *done["original_range"][1:], "clip.deid-solid-2.mp4"]}
    assert done["original_mute"] is True and done["original_range"][0] == 1
    [first_call] = facts["calls_first"]
    assert first_call[first_call.index("-o") + 1] == str(out / "clip.deid-solid-2.mp4") and "--force" not in first_call
    copy = facts["after_first"]["clip.deid-solid"]
    assert copy[5] is True  # the copy is what is selected after a run
    assert copy[6] == {"deid_edit_source": str(clip), "deid_edit_mode": "solid", "deid_edit_original": "clip"}

    # Re-run from the selected copy, same mode: one copy, replaced in place; our own file overwritten.
    same = facts["rerun_same_mode"]
    assert same["result"] == ["FINISHED"]
    assert [["INFO"], "clip.deid-solid is an anonymized copy: anonymizing its original clip again"] in same["reports"]
    assert sorted(same["strips"]) == ["clip", "clip.deid-solid"]  # no clip.deid-solid.deid-solid, no second copy
    assert same["strips"]["clip.deid-solid"][:4] == [2, *done["original_range"][1:], "clip.deid-solid-2.mp4"]
    assert same["strips"]["clip.deid-solid"][5] is True and same["strips"]["clip.deid-solid"][6]["deid_edit_original"] == "clip"
    [call] = same["calls"]
    assert call[1] == str(clip) and call[call.index("-o") + 1] == str(out / "clip.deid-solid-2.mp4") and "--force" in call
    assert same["files"] == ["clip.deid-solid-2.mp4", "clip.deid-solid.mp4"]
    assert any("replacing the previous copy" in message for _, message in same["reports"]), same["reports"]

    # From the copy again, another mode: a pixelate copy joins the solid one; a new file, no --force.
    other = facts["rerun_other_mode"]
    assert other["result"] == ["FINISHED"]
    assert sorted(other["strips"]) == ["clip", "clip.deid-pixelate", "clip.deid-solid"]
    assert other["strips"]["clip.deid-solid"][:4] == [2, *done["original_range"][1:], "clip.deid-solid-2.mp4"]
    assert other["strips"]["clip.deid-pixelate"][:4] == [3, *done["original_range"][1:], "clip.deid-pixelate.mp4"]
    assert other["strips"]["clip.deid-pixelate"][6]["deid_edit_mode"] == "pixelate"
    [call] = other["calls"]
    assert call[1] == str(clip) and "--force" not in call
    assert other["files"] == ["clip.deid-pixelate.mp4", "clip.deid-solid-2.mp4", "clip.deid-solid.mp4"]

    # A copy whose original is not in the timeline: refused with a clear message, the CLI never started.
    orphan = facts["orphan_copy"]
    assert orphan["result"] == ["CANCELLED"] and orphan["calls"] == []
    errors = [message for level, message in orphan["reports"] if level == ["ERROR"]]
    assert errors and "stray is an anonymized copy made by deid-edit" in errors[0] and "select the original" in errors[0]
    assert set(orphan["strips"]) == {"clip", "clip.deid-pixelate", "clip.deid-solid", "stray"}

    assert facts["foreign_after"] == "the editor's own file"
    assert facts["ledger"] == {
        str(out / "clip.deid-solid-2.mp4"): str(clip),
        str(out / "clip.deid-pixelate.mp4"): str(clip),
    }

    # Esc: other keys pass through and leave the job alone; Esc's press kills the child and is consumed.
    cancelled = facts["modal_cancel"]
    assert cancelled["start"] == ["RUNNING_MODAL"]
    assert cancelled["other_keys"] == {
        "A PRESS": ["PASS_THROUGH"],
        "SPACE PRESS": ["PASS_THROUGH"],
        "RET PRESS": ["PASS_THROUGH"],
        "ESC RELEASE": ["RUNNING_MODAL"],  # swallowed, not a cancel
    }
    assert cancelled["alive_after_other_keys"]
    assert cancelled["end"] == ["CANCELLED"] and not cancelled["child_alive"]  # no PASS_THROUGH: Esc stops here
    assert cancelled["new"] == {} and cancelled["original_mute"] is False
    assert cancelled["timers_after"] == 0 and not cancelled["running_after"]
    assert any("Cancelled" in message for _, message in cancelled["reports"]), cancelled["reports"]

    button = facts["cancel_button"]
    assert button["start"] == ["RUNNING_MODAL"] and button["button"] == ["FINISHED"] and button["alive_after_button"]
    assert button["end"] == ["CANCELLED", "PASS_THROUGH"] and not button["child_alive"]
    assert not button["running_after"] and button["timers_after"] == 0
    assert facts["files_at_end"] == ["clip.deid-pixelate.mp4", "clip.deid-solid-2.mp4", "clip.deid-solid.mp4"]  # no matte file

    assert not facts["disabled_has_operator"] and not facts["disabled_has_scene_prop"]
