"""The DaVinci Resolve script (plugins/davinci/deid_edit_anonymize.py) without Resolve.

Resolve cannot run here, so the script is tested in four layers: the clip-placement logic as a pure
function; the CLI runner against the real ``deid-edit`` console script; ``main`` end to end against
the in-memory Resolve stand-in (tests/resolve_standin.py) with the real CLI on a generated sample
clip; and every Resolve method the script or the stand-in uses checked against the method list in
Resolve 21.0.2's own scripting README (../shared/reference), so a misspelt, deprecated or
undocumented call fails here instead of inside Resolve.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
from resolve_standin import STAND_IN_CLASSES, StandInResolve

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "plugins" / "davinci" / "deid_edit_anonymize.py"
CANCEL_SCRIPT = SCRIPT.with_name("deid_edit_cancel.py")
SHARED = Path(os.environ.get("DEID_EDIT_SHARED", ROOT.parent / "shared"))
RESOLVE_README = SHARED / "reference" / "resolve_scripting_README_21.0.2.txt"
CLI = Path(sys.executable).with_name("deid-edit")


def _load_script():
    spec = importlib.util.spec_from_file_location("deid_edit_anonymize", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dv = _load_script()


def _config(**overrides):
    config = dict(dv.DEFAULTS, cli=str(CLI), mode="solid")
    config.update(overrides)
    return config


def _source(start, end, record_start, record_end, track=1):
    return dv.SourceRange(start, end, record_start, record_end, track)


def _tracks(*spans_per_track, locked=()):
    return [dv.TrackState(i, i in locked, list(spans)) for i, spans in enumerate(spans_per_track, start=1)]


# --------------------------------------------------------------------------------------------------
# Placement: a pure function


def test_placement_goes_on_the_track_above_at_the_same_record_frame_and_source_range():
    p = dv.plan_placement(_source(0, 100, 90000, 90100), _tracks([(90000, 90100)], []))
    assert p == dv.Placement(start_frame=0, end_frame=100, record_frame=90000, track_index=2, tracks_to_add=0)


def test_placement_keeps_a_trimmed_head():
    """A clip trimmed by 48 frames at the head starts 48 frames into the anonymized copy too."""
    p = dv.plan_placement(_source(48, 120, 90310, 90382), _tracks([(90310, 90382)]))
    assert (p.start_frame, p.end_frame, p.record_frame) == (48, 120, 90310)


def test_placement_adds_a_track_when_the_original_is_on_the_top_track():
    p = dv.plan_placement(_source(0, 50, 1000, 1050, track=2), _tracks([], [(1000, 1050)]))
    assert (p.track_index, p.tracks_to_add) == (3, 1)


def test_placement_skips_occupied_and_locked_tracks_and_creates_the_next_one():
    tracks = _tracks([(1000, 1050)], [(1040, 1100)], [], locked=(3,))
    p = dv.plan_placement(_source(0, 50, 1000, 1050), tracks)
    assert (p.track_index, p.tracks_to_add) == (4, 1)
    # V3 unlocked: it is the next free one, nothing to add.
    p = dv.plan_placement(_source(0, 50, 1000, 1050), _tracks([(1000, 1050)], [(1040, 1100)], []))
    assert (p.track_index, p.tracks_to_add) == (3, 0)


def test_placement_uses_a_free_track_above_even_when_a_lower_one_is_busy():
    tracks = _tracks([(1000, 1050)], [(900, 1001)], [(0, 10)], [])
    assert dv.plan_placement(_source(0, 50, 1000, 1050), tracks).track_index == 3


def test_placement_treats_ends_as_exclusive():
    """Items that only touch the record range (GetEnd() == our start, or start == our end) leave the track free."""
    tracks = _tracks([(1000, 1050)], [(950, 1000), (1050, 1200)])
    assert dv.plan_placement(_source(0, 50, 1000, 1050), tracks).track_index == 2
    tracks = _tracks([(1000, 1050)], [(950, 1001)])
    assert dv.plan_placement(_source(0, 50, 1000, 1050), tracks).track_index == 3


def test_placement_never_mixes_source_and_record_frames_across_frame_rates():
    """A 50 fps clip on a 25 fps timeline: 100 source frames span 50 record frames.

    startFrame/endFrame stay in source frames and the occupancy check uses the record range; reading
    the source length as record frames would collide with the item at 90460 on V2 and push the clip
    to a new track.
    """
    source = _source(100, 200, 90400, 90450)
    p = dv.plan_placement(source, _tracks([(90400, 90450)], [(90460, 90500)]))
    assert p == dv.Placement(100, 200, 90400, 2, 0)
    # 23.976 fps clip on a 29.97 timeline, fractional-free: 24 source frames -> 30 record frames.
    p = dv.plan_placement(_source(0, 24, 108000, 108030), _tracks([(108000, 108030)], [(108029, 108100)]))
    assert (p.start_frame, p.end_frame, p.track_index, p.tracks_to_add) == (0, 24, 3, 1)


def test_placement_refuses_empty_ranges():
    with pytest.raises(ValueError, match="source range"):
        dv.plan_placement(_source(10, 10, 0, 5), _tracks([]))
    with pytest.raises(ValueError, match="record range"):
        dv.plan_placement(_source(0, 10, 5, 5), _tracks([]))


def test_clip_info_has_the_documented_keys():
    info = dv.clip_info(dv.Placement(48, 120, 90310, 3, 1), "mpi")
    assert info == {"mediaPoolItem": "mpi", "startFrame": 48, "endFrame": 120, "trackIndex": 3, "recordFrame": 90310, "mediaType": 1}


# --------------------------------------------------------------------------------------------------
# Configuration


def test_config_merges_defaults_json_and_environment(tmp_path):
    photo = tmp_path / "alice.jpg"
    photo.write_bytes(b"x")
    cfg = tmp_path / "deid.json"
    cfg.write_text(json.dumps({"mode": "pixelate", "clip_color": "Orange", "keep": [str(photo)], "output_dir": "/from/json"}))
    env = {"DEID_EDIT_RESOLVE_CONFIG": str(cfg), "DEID_EDIT_OUTPUT_DIR": str(tmp_path / "env"), "DEID_EDIT_MODE": "matte"}
    config = dv.load_config(env)
    assert config["mode"] == "matte"  # env beats JSON
    assert config["clip_color"] == "Orange"  # JSON beats defaults
    assert config["output_dir"] == str(tmp_path / "env")
    assert config["keep"] == [str(photo)]
    assert config["bin"] == "Anonymized"
    env["DEID_EDIT_KEEP"] = os.pathsep.join([str(photo), str(photo)])
    assert dv.load_config(env)["keep"] == [str(photo), str(photo)]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mode": "debug"}, "mode 'debug'"),
        ({"clip_color": "orange"}, "not a Resolve clip colour"),
        ({"keep": ["/no/such/photo.jpg"]}, "does not exist"),
        ({"name_template": "{stem}{what}"}, "name_template"),
        ({"colour": "Blue"}, "unknown setting"),
    ],
)
def test_config_rejects_bad_values_up_front(tmp_path, settings, message):
    cfg = tmp_path / "deid.json"
    cfg.write_text(json.dumps(settings))
    with pytest.raises(dv.ConfigError, match=message):
        dv.load_config({}, str(cfg))


def test_output_path_follows_folder_and_template(tmp_path):
    config = _config(output_dir=str(tmp_path), name_template="{stem}_{mode}{ext}")
    assert dv.output_path_for("/media/card/A001.mov", config) == str(tmp_path / "A001_solid.mov")
    # the default name carries the mode
    assert dv.output_path_for("/media/card/A001.mov", _config()) == os.path.abspath("/media/card/A001.deid-solid.mov")
    assert dv.output_path_for("/media/card/A001.mov", _config(mode="blur")) == os.path.abspath("/media/card/A001.deid-blur.mov")


def test_a_name_template_without_the_mode_is_refused(tmp_path):
    with pytest.raises(dv.ConfigError, match="must contain {mode}"):
        dv.validate_config(_config(name_template="{stem}.anon{ext}"))


def test_free_output_path_never_takes_an_existing_or_claimed_name(tmp_path):
    first = str(tmp_path / "clip.deid-blur.mp4")
    assert dv.free_output_path(first) == first
    Path(first).write_bytes(b"used in another timeline")
    assert dv.free_output_path(first) == str(tmp_path / "clip.deid-blur-2.mp4")
    taken = {os.path.normcase(str(tmp_path / "clip.deid-blur-2.mp4"))}
    assert dv.free_output_path(first, taken) == str(tmp_path / "clip.deid-blur-3.mp4")


def test_missing_cli_names_the_setting_to_change():
    with pytest.raises(dv.ConfigError, match="DEID_EDIT_CLI"):
        dv.cli_command(_config(cli="/nowhere/deid-edit"))


# --------------------------------------------------------------------------------------------------
# The CLI runner


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The 4 s generated clip (two faces, audio), written by the real ``deid-edit sample``."""
    path = tmp_path_factory.mktemp("resolve") / "interview.mp4"
    subprocess.run([str(CLI), "sample", str(path)], check=True, capture_output=True, timeout=120)
    return path


def test_runner_reports_the_cli_error_message(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_text("not a video")
    result = dv.run_cli([str(CLI)], str(bad), str(tmp_path / "out.mp4"), _config())
    assert not result.ok
    assert result.returncode == 1
    assert "not a readable video" in result.message
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("import sys; sys.stderr.write('deid-edit: error: boom\\n'); sys.exit(1)", "deid-edit: error: boom"),
        ("import sys; sys.exit(130)", "interrupted"),
        ('print(\'{"stage": "detect", "done": 1, "total": 2}\')', "exited with code 0"),
        ('print(\'{"stage": "done", "output": "/no/such/file.mp4", "faces": 1}\')', "does not exist"),
        ('import sys; print(\'{"stage": "done", "output": "EXISTING"}\'); sys.exit(1)', "exited with code 1"),
    ],
)
def test_runner_never_takes_a_missing_output_for_success(tmp_path, code, message):
    """Exit codes, stderr and the "done" line are all checked; a stand-in CLI exercises each branch."""
    (tmp_path / "exists.mp4").write_bytes(b"x")
    code = code.replace("EXISTING", json.dumps(str(tmp_path / "exists.mp4"))[1:-1])
    result = dv.run_cli([sys.executable, "-c", code], "in.mp4", str(tmp_path / "out.mp4"), _config())
    assert not result.ok
    assert message in result.message


def test_runner_cannot_start_program(tmp_path):
    result = dv.run_cli([str(tmp_path / "missing")], "in.mp4", str(tmp_path / "o.mp4"), _config())
    assert not result.ok and "could not start" in result.message


# --------------------------------------------------------------------------------------------------
# End to end against the Resolve stand-in


@pytest.mark.slow  # ~11 s
def test_main_anonymizes_coloured_clips_and_places_them_above(sample, tmp_path, capsys):
    """Real CLI on the sample clip; the stand-in records what the script asked Resolve to do.

    V1 holds three Orange clips (two trims of the sample, one broken file) and one Blue clip; V2 holds a
    title over the first clip. The first clip must go to a new V3, the second to V2, the broken one
    nowhere, the Blue one is left alone, and the sample is anonymized once for both of its clips.
    """
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    resolve = StandInResolve(timeline_kwargs={"fps": 15.0, "start_frame": 54000, "video_tracks": 2})
    tl = resolve.timeline
    clip = resolve.media(sample, fps=15.0)
    first = tl.add_clip(1, clip, 10, 40, 54000, color="Orange")  # trimmed head: source 10..40
    second = tl.add_clip(1, clip, 0, 20, 54040, color="Orange")
    failing = tl.add_clip(1, resolve.media(broken, fps=15.0), 0, 20, 54100, color="Orange")
    tl.add_clip(1, clip, 30, 60, 54200, color="Blue")
    tl.add_clip(2, None, 0, 10, 54005)  # a title over the first clip
    out_dir = tmp_path / "anon"
    calls = []

    def counting_runner(*args, **kwargs):
        calls.append(args[1])
        return dv.run_cli(*args, **kwargs)

    results = dv.main(resolve, _config(clip_color="Orange", output_dir=str(out_dir)), runner=counting_runner)

    output = str(out_dir / "interview.deid-solid.mp4")  # the mode in the name
    assert [r.status for r in results] == ["placed", "placed", "failed"]
    assert "not a readable video" in results[2].message
    assert calls == [str(sample), str(broken)]  # the sample once for both of its clips
    assert Path(output).is_file()

    # The bin: "Anonymized" under the root, holding the output; the editor's current folder restored.
    mp = resolve.media_pool
    bins = [f for f in mp.root.GetSubFolderList() if f.GetName() == "Anonymized"]
    assert len(bins) == 1
    assert [c.GetClipProperty("File Path") for c in bins[0].GetClipList()] == [output]
    assert mp.current is mp.root
    anon = bins[0].GetClipList()[0]

    # The track: one added on top for the first clip; the second fits on V2 beside the title.
    assert tl.GetTrackCount("video") == 3
    assert mp.appended == [
        {"mediaPoolItem": anon, "startFrame": 10, "endFrame": 40, "trackIndex": 3, "recordFrame": 54000, "mediaType": 1},
        {"mediaPoolItem": anon, "startFrame": 0, "endFrame": 20, "trackIndex": 2, "recordFrame": 54040, "mediaType": 1},
    ]
    placed_v3 = tl.GetItemListInTrack("video", 3)
    assert [(i.GetStart(), i.GetEnd()) for i in placed_v3] == [(first.GetStart(), first.GetEnd())]
    placed_v2 = [i for i in tl.GetItemListInTrack("video", 2) if i.GetMediaPoolItem() is anon]
    assert [(i.GetStart(), i.GetEnd()) for i in placed_v2] == [(second.GetStart(), second.GetEnd())]
    assert not any(i.GetStart() == failing.GetStart() for t in (2, 3) for i in tl.GetItemListInTrack("video", t))

    # The marker: on each new clip, first frame, carrying the output path.
    for item in placed_v3 + placed_v2:
        assert item.GetMarkers() == {0.0: {"color": "Green", "duration": 1.0, "note": output, "name": "deid-edit", "customData": output}}
    assert tl.markers == {}

    printed = capsys.readouterr().out
    assert "ERROR broken.mp4: " in printed and "not a readable video" in printed
    assert "done: 2 placed, 1 failed, 0 skipped" in printed
    # The script called only documented methods of the classes it called them on.
    documented = _documented_methods()
    assert {(cls, m) for cls, m, _ in resolve.calls} <= {(cls, m) for cls, ms in documented.items() for m in ms}


def _fake_runner(argv_prefix, source, output, config, on_progress=None):
    """Stands in for the CLI where the test is about Resolve, not about anonymizing."""
    Path(output).write_bytes(b"anonymized")
    return dv.RunResult(True, output, "", 1, 0, 10, 0)


def test_main_processes_the_clip_under_the_playhead(tmp_path):
    src = tmp_path / "a.mov"
    src.write_bytes(b"x")
    resolve = StandInResolve(timeline_kwargs={"fps": 24.0, "start_frame": 86400})
    tl = resolve.timeline
    clip = resolve.media(src)
    tl.add_clip(1, clip, 0, 48, 86400)
    target = tl.add_clip(1, clip, 100, 148, 86448)
    tl.playhead = 86460
    results = dv.main(resolve, _config(), runner=_fake_runner)
    assert [r.status for r in results] == ["placed"]
    assert resolve.media_pool.appended[0]["startFrame"] == 100
    assert resolve.media_pool.appended[0]["recordFrame"] == target.GetStart()
    assert resolve.media_pool.appended[0]["trackIndex"] == 2


def test_a_second_run_never_overwrites_the_first_result(tmp_path):
    """Same clip, same mode, twice: a second file (-2), imported into the same bin and placed one track higher;
    the first file, which other timelines may use, is untouched."""
    src = tmp_path / "a.mov"
    src.write_bytes(b"x")
    resolve = StandInResolve()
    resolve.timeline.add_clip(1, resolve.media(src), 0, 25, 90000, color="Teal")
    first = dv.main(resolve, _config(clip_color="Teal"), runner=_fake_runner)
    Path(first[0].output).write_bytes(b"graded and used elsewhere")
    second = dv.main(resolve, _config(clip_color="Teal"), runner=_fake_runner)
    assert [r.output for r in first + second] == [str(tmp_path / "a.deid-solid.mov"), str(tmp_path / "a.deid-solid-2.mov")]
    assert (tmp_path / "a.deid-solid.mov").read_bytes() == b"graded and used elsewhere"
    bins = [f for f in resolve.media_pool.root.GetSubFolderList() if f.GetName() == "Anonymized"]
    assert len(bins) == 1
    assert [c.GetClipProperty("File Path") for c in bins[0].GetClipList()] == [r.output for r in first + second]
    anon1, anon2 = bins[0].GetClipList()
    # The second copy finds V2 taken by the first and goes one track higher.
    assert [(i["trackIndex"], i["mediaPoolItem"]) for i in resolve.media_pool.appended] == [(2, anon1), (3, anon2)]


def _recording_cli(tmp_path, hang=False, ignore_sigint=False):
    """A stand-in CLI (a Python script) that logs its argv, refuses an existing output without --force like
    the real one, and either writes the output or (hang) writes a partial file and waits to be stopped."""
    log = tmp_path / "cli-calls.jsonl"
    script = tmp_path / "fake_cli.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import json, os, signal, sys, time
            args = sys.argv[1:]
            with open({str(log)!r}, "a") as fh:
                fh.write(json.dumps({{"argv": args, "pid": os.getpid()}}) + "\\n")
            out = args[args.index("-o") + 1]
            if os.path.exists(out) and "--force" not in args:
                print(json.dumps({{"stage": "error", "message": out + ": already exists"}}), flush=True)
                sys.exit(1)
            if {hang!r}:
                if {ignore_sigint!r}:
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
                stem, ext = os.path.splitext(os.path.basename(out))
                partial = os.path.join(os.path.dirname(out), "." + stem + ".x1y2.part" + ext)
                open(partial, "wb").close()
                print(json.dumps({{"stage": "analyze", "done": 1, "total": 100}}), flush=True)
                try:
                    time.sleep(60)  # silent from here on: only a stop ends it
                except KeyboardInterrupt:
                    os.remove(partial)
                    sys.exit(130)
            with open(out, "wb") as fh:
                fh.write(b"anonymized")
            print(json.dumps({{"stage": "done", "output": out, "faces": 1, "kept": 0, "frames": 10}}), flush=True)
            """
        )
    )

    def calls():
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    return [sys.executable, str(script)], calls


def test_the_cli_is_never_asked_to_overwrite(tmp_path):
    """Through the real runner: no --force, and an existing file of that name (the editor's) stays as it was."""
    cli, calls = _recording_cli(tmp_path)
    src = tmp_path / "a.mov"
    src.write_bytes(b"x")
    (tmp_path / "a.deid-blur.mov").write_bytes(b"the editor's file")
    resolve = StandInResolve()
    resolve.timeline.add_clip(1, resolve.media(src), 0, 25, 90000, color="Lime")
    results = dv.main(resolve, _config(cli=cli, mode="blur", clip_color="Lime"))
    assert [r.status for r in results] == ["placed"]
    [call] = calls()
    assert "--force" not in call["argv"] and call["argv"][call["argv"].index("-o") + 1] == str(tmp_path / "a.deid-blur-2.mov")
    assert (tmp_path / "a.deid-blur.mov").read_bytes() == b"the editor's file"
    assert (tmp_path / "a.deid-blur-2.mov").read_bytes() == b"anonymized"


def test_a_copy_under_the_playhead_is_never_anonymized_again(tmp_path, capsys):
    """After a run the copy is the topmost clip at the playhead: a second run uses the original under it
    (one more copy of the original, no clip.deid-solid.deid-solid); a copy with no original is skipped."""
    src = tmp_path / "a.mov"
    src.write_bytes(b"x")
    resolve = StandInResolve(timeline_kwargs={"fps": 24.0, "start_frame": 86400})
    tl = resolve.timeline
    tl.add_clip(1, resolve.media(src), 0, 48, 86400)
    tl.playhead = 86410
    sources = []

    def runner(argv_prefix, source, output, config, on_progress=None):
        sources.append(source)
        return _fake_runner(argv_prefix, source, output, config, on_progress)

    first = dv.main(resolve, _config(), runner=runner)
    assert tl.GetCurrentVideoItem().GetTrackTypeAndIndex() == ["video", 2]  # the copy is what the playhead finds now
    second = dv.main(resolve, _config(), runner=runner)
    assert [r.status for r in first + second] == ["placed", "placed"]
    assert sources == [str(src), str(src)]  # the original both times, never the anonymized file
    assert [r.output for r in first + second] == [str(tmp_path / "a.deid-solid.mov"), str(tmp_path / "a.deid-solid-2.mov")]
    assert [(i["trackIndex"], i["startFrame"], i["recordFrame"]) for i in resolve.media_pool.appended] == [(2, 0, 86400), (3, 0, 86400)]
    assert "is an anonymized copy; anonymizing its original on V1 instead" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.deid-solid-2.mov", "a.deid-solid.mov", "a.mov"]

    # A copy whose original is gone (here: an output file alone on the timeline) is skipped; the CLI never runs.
    lone = StandInResolve()
    lone.timeline.add_clip(1, lone.media(tmp_path / "a.deid-solid.mov"), 0, 25, 90000)
    lone.timeline.playhead = 90005
    results = dv.main(lone, _config(), runner=runner)
    assert [r.status for r in results] == ["skipped"] and "anonymized copy" in results[0].message
    assert len(sources) == 2 and lone.media_pool.appended == []


@pytest.mark.slow  # ~3.5 s with its 100-frame clip
def test_stop_file_interrupts_the_real_cli_and_cancels_the_rest(tmp_path, sample, monkeypatch, capsys):
    """The stop file appears while the real CLI analyzes: it gets SIGINT, exits 130 leaving no file, and
    the clip it worked on and the next one are reported as cancelled; nothing is placed; the file is removed."""
    stop = tmp_path / "stop"
    other = tmp_path / "other.mp4"
    other.write_bytes(sample.read_bytes())
    procs = []
    real_popen = dv.subprocess.Popen

    def recording_popen(*args, **kwargs):
        procs.append(real_popen(*args, **kwargs))
        return procs[-1]

    monkeypatch.setattr(dv.subprocess, "Popen", recording_popen)

    def stopping_runner(argv_prefix, source, output, config, on_progress=None):
        return dv.run_cli(argv_prefix, source, output, config, on_progress=lambda stage, done, total: stop.write_text("stop"))

    resolve = StandInResolve(timeline_kwargs={"fps": 15.0, "start_frame": 54000})
    resolve.timeline.add_clip(1, resolve.media(sample, fps=15.0), 0, 30, 54000, color="Violet")
    resolve.timeline.add_clip(1, resolve.media(other, fps=15.0), 0, 30, 54100, color="Violet")
    out_dir = tmp_path / "anon"
    started = time.monotonic()
    results = dv.main(resolve, _config(clip_color="Violet", output_dir=str(out_dir), stop_file=str(stop)), runner=stopping_runner)
    assert time.monotonic() - started < 30
    assert [r.status for r in results] == ["cancelled", "cancelled"]
    assert "stopped" in results[0].message and results[1].message.startswith("not started")
    assert len(procs) == 1 and procs[0].returncode == 130  # the CLI got the interrupt and cleaned up itself
    assert sorted(p.name for p in out_dir.iterdir()) == []  # no output, no partial file
    assert resolve.media_pool.appended == [] and not stop.exists()
    assert "cancelled: 0 placed, 0 failed, 0 skipped, 2 cancelled" in capsys.readouterr().out


# killed-after-grace is slow: ~2 s of waiting out the grace
@pytest.mark.parametrize("ignore_sigint", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["sigint", "killed-after-grace"])
def test_stop_file_ends_a_silent_cli(tmp_path, monkeypatch, ignore_sigint):
    """The CLI prints nothing for a while (models loading): the stop file is still noticed within the poll
    interval. A CLI that ignores the interrupt is killed after the grace time, and its partial file removed."""
    monkeypatch.setattr(dv, "STOP_GRACE_SECONDS", 1.0)
    cli, calls = _recording_cli(tmp_path, hang=True, ignore_sigint=ignore_sigint)
    stop = tmp_path / "stop"
    src = tmp_path / "a.mov"
    src.write_bytes(b"x")
    resolve = StandInResolve()
    resolve.timeline.add_clip(1, resolve.media(src), 0, 25, 90000, color="Navy")
    timer = threading.Timer(1.0, stop.write_text, args=("stop",))
    timer.start()
    started = time.monotonic()
    results = dv.main(resolve, _config(cli=cli, clip_color="Navy", stop_file=str(stop)))
    timer.join()
    assert time.monotonic() - started < 10
    assert [r.status for r in results] == ["cancelled"]
    [call] = calls()
    with pytest.raises(ProcessLookupError):
        os.kill(call["pid"], 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mov", "cli-calls.jsonl", "fake_cli.py"]  # no output, no partial
    assert resolve.media_pool.appended == [] and not stop.exists()


def test_ctrl_c_in_a_terminal_cancels_like_the_stop_file(tmp_path):
    cli, calls = _recording_cli(tmp_path, hang=True)
    src = tmp_path / "a.mov"
    src.write_bytes(b"x")

    def interrupted_runner(argv_prefix, source, output, config, on_progress=None):
        def ctrl_c(stage, done, total):
            raise KeyboardInterrupt  # what Python raises in the script when Ctrl-C arrives during the run

        return dv.run_cli(argv_prefix, source, output, config, on_progress=ctrl_c)

    resolve = StandInResolve()
    resolve.timeline.add_clip(1, resolve.media(src), 0, 25, 90000, color="Tan")
    results = dv.main(resolve, _config(cli=cli, clip_color="Tan", stop_file=str(tmp_path / "stop")), runner=interrupted_runner)
    assert [(r.status, r.message) for r in results] == [("cancelled", "interrupted (Ctrl-C)")]
    with pytest.raises(ProcessLookupError):
        os.kill(calls()[0]["pid"], 0)
    assert not (tmp_path / "a.deid-solid.mov").exists()


def test_a_stop_between_clips_and_a_stale_stop_file(tmp_path):
    """A leftover stop file from an earlier run is removed at the start; one that appears after the first
    clip stops before the second, which is reported as not started; the first stays placed."""
    stop = tmp_path / "stop"
    stop.write_text("left over")
    srcs = [tmp_path / "a.mov", tmp_path / "b.mov"]
    resolve = StandInResolve()
    for i, src in enumerate(srcs):
        src.write_bytes(b"x")
        resolve.timeline.add_clip(1, resolve.media(src), 0, 25, 90000 + 100 * i, color="Pink")

    def runner_then_stop(argv_prefix, source, output, config, on_progress=None):
        result = _fake_runner(argv_prefix, source, output, config, on_progress)
        stop.write_text("stop")
        return result

    results = dv.main(resolve, _config(clip_color="Pink", stop_file=str(stop)), runner=runner_then_stop)
    assert [r.status for r in results] == ["placed", "cancelled"]
    assert results[1].message.startswith("not started")
    assert [i["recordFrame"] for i in resolve.media_pool.appended] == [90000]
    assert not stop.exists()


def test_the_cancel_script_creates_the_stop_file_even_with_a_broken_config(tmp_path):
    """deid_edit_cancel.py (Workspace > Scripts) run as Resolve would run it: a separate script in the same folder."""
    stop = tmp_path / "stop"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"keep": ["/no/such/photo.jpg"]}))  # would stop a run from starting, not a stop
    env = {**os.environ, "DEID_EDIT_STOP_FILE": str(stop), "DEID_EDIT_RESOLVE_CONFIG": str(broken)}
    proc = subprocess.run([sys.executable, str(CANCEL_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert stop.is_file() and "stop requested" in proc.stdout
    config = _config(stop_file=str(stop))
    assert dv.stop_requested(config)
    dv.clear_stop(config)
    assert not dv.stop_requested(config)
    # The default location, when nothing is set: the temporary folder.
    assert dv.stop_file_path(_config()) == os.path.join(tempfile.gettempdir(), "deid_edit_anonymize.stop")


def test_a_clip_that_cannot_be_placed_gets_nothing_and_the_next_one_goes_on(tmp_path, monkeypatch, capsys):
    """Two failures after the CLI succeeded: a source range the script cannot place (zero length) and
    an append Resolve refuses (empty list back). Both are reported; neither leaves an item or a marker;
    the last clip is still placed."""
    src = tmp_path / "a.mov"
    src.write_bytes(b"x")
    resolve = StandInResolve()
    tl, mp = resolve.timeline, resolve.media_pool
    tl.add_clip(1, resolve.media(src), 5, 5, 90000, color="Pink")  # zero-length source range
    tl.add_clip(1, resolve.media(src), 0, 25, 90100, color="Pink")
    tl.add_clip(1, resolve.media(src), 0, 25, 90200, color="Pink")
    real_append = mp.AppendToTimeline
    refusals = iter([True])
    monkeypatch.setattr(mp, "AppendToTimeline", lambda infos: [] if next(refusals, False) else real_append(infos))
    results = dv.main(resolve, _config(clip_color="Pink"), runner=_fake_runner)
    assert [r.status for r in results] == ["failed", "failed", "placed"]
    assert "empty source range" in results[0].message
    assert "refused to place it on video track 2" in results[1].message
    assert [i["recordFrame"] for i in mp.appended] == [90200]
    assert [i.GetStart() for i in tl.GetItemListInTrack("video", 2)] == [90200]
    assert capsys.readouterr().out.count("ERROR a.mov") == 2


def test_an_unexpected_answer_from_resolve_fails_only_that_clip(tmp_path, monkeypatch):
    """Resolve answering None where a frame number belongs (seen with offline media) costs one clip, not the run."""
    src = tmp_path / "a.mov"
    src.write_bytes(b"x")
    resolve = StandInResolve()
    odd = resolve.timeline.add_clip(1, resolve.media(src), 0, 25, 90000, color="Olive")
    resolve.timeline.add_clip(1, resolve.media(src), 0, 25, 90100, color="Olive")
    monkeypatch.setattr(odd, "GetSourceEndFrame", lambda: None)
    results = dv.main(resolve, _config(clip_color="Olive"), runner=_fake_runner)
    assert [r.status for r in results] == ["failed", "placed"]
    assert "unexpected error" in results[0].message
    assert [i["recordFrame"] for i in resolve.media_pool.appended] == [90100]


def test_main_skips_items_without_media_and_reports_nothing_to_do(tmp_path, capsys):
    resolve = StandInResolve()
    resolve.timeline.add_clip(1, None, 0, 25, 90000, color="Navy")
    results = dv.main(resolve, _config(clip_color="Navy"), runner=_fake_runner)
    assert [r.status for r in results] == ["skipped"]
    assert dv.main(resolve, _config(clip_color="Lime"), runner=_fake_runner) == []
    assert "found no clips with clip colour Lime" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------------
# Every Resolve call against the README shipped with Resolve 21.0.2


def _readme_text() -> str:
    if not RESOLVE_README.is_file():
        pytest.skip(f"needs the Resolve 21.0.2 scripting README from ../shared/reference; not found at {RESOLVE_README}")
    return RESOLVE_README.read_text(encoding="utf-8")


def _documented_methods() -> dict[str, set[str]]:
    """{class: methods} from the README's API section, which ends before the deprecated/unsupported lists."""
    text = _readme_text()
    api = text[text.index("DaVinci Resolve API\n---") : text.index("List and Dict Data Structures")]
    classes: dict[str, set[str]] = {}
    current = None
    for line in api.splitlines():
        header = re.match(r"^([A-Z][A-Za-z]+)\s*(#.*)?$", line)
        if header:
            current = classes.setdefault(header.group(1), set())
            continue
        method = re.match(r"^  ([A-Z][A-Za-z0-9]*)\(", line)
        if method and current is not None:
            current.add(method.group(1))
    return classes


def _script_api_calls() -> set[str]:
    """Names of CamelCase methods the script calls on objects (Resolve's naming); module calls excluded."""
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    modules = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr[:1].isupper()
        and not (isinstance(node.func.value, ast.Name) and node.func.value.id in modules)
    }


def test_readme_parser_sees_the_api_and_not_the_deprecated_calls():
    documented = _documented_methods()
    assert {"Resolve", "ProjectManager", "Project", "MediaPool", "Folder", "MediaPoolItem", "Timeline", "TimelineItem"} <= set(documented)
    assert "AppendToTimeline" in documented["MediaPool"]
    assert "GetSourceStartFrame" in documented["TimelineItem"]
    assert "GetSubFolders" not in documented["Folder"]  # deprecated: listed only after the API section
    assert "GetItemsInTrack" not in documented["Timeline"]


def test_every_resolve_call_in_the_script_is_documented():
    documented = set().union(*_documented_methods().values())
    used = _script_api_calls()
    assert {"GetClipProperty", "AppendToTimeline", "ImportMedia", "AddSubFolder", "AddTrack", "AddMarker", "GetCurrentVideoItem"} <= used
    assert sorted(used - documented) == []


def test_the_stand_in_implements_only_documented_methods_of_its_class():
    documented = _documented_methods()
    for cls in STAND_IN_CLASSES:
        assert cls.__name__.startswith("StandIn")
        methods = {n for n in vars(cls) if n[:1].isupper() and callable(getattr(cls, n))}
        assert methods, cls
        assert sorted(methods - documented[cls.API_CLASS]) == [], cls.API_CLASS


def test_the_stand_in_covers_every_call_the_script_makes():
    """So the end-to-end run cannot pass by never reaching a call Resolve would receive."""
    implemented = {n for cls in STAND_IN_CLASSES for n in vars(cls) if n[:1].isupper()}
    assert sorted(_script_api_calls() - implemented) == []


@pytest.mark.parametrize("script", [SCRIPT, CANCEL_SCRIPT], ids=lambda p: p.name)
def test_script_runs_on_resolves_python_and_never_imports_the_package(script):
    """Resolve embeds its own Python (3.6 or newer) without deid_edit installed."""
    source = script.read_text(encoding="utf-8")
    tree = ast.parse(source, feature_version=(3, 6))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert "deid_edit" not in imported
    assert "__future__" not in imported
    assert not any(isinstance(node, ast.NamedExpr | ast.Match) for node in ast.walk(tree))


def _studio_flagged_methods() -> set[str]:
    """Methods the README marks 'Refer to section "Studio and AI Scripting APIs" for prerequisites'.

    That section says such calls "can return with a False status" in the free version (or without the
    Extras); the note sits on the line(s) after the method's own line.
    """
    text = _readme_text()
    api = text[text.index("DaVinci Resolve API\n---") : text.index("List and Dict Data Structures")]
    flagged, last = set(), None
    for line in api.splitlines():
        method = re.match(r"^  ([A-Z][A-Za-z0-9]*)\(", line)
        if method:
            last = method.group(1)
        if 'Refer to section "Studio and AI Scripting APIs"' in line and last:
            flagged.add(last)
    return flagged


def test_the_script_uses_no_call_the_readme_marks_as_studio_or_extras():
    """What plugins/davinci/README.md says about Resolve Free rests on this: none of the calls is flagged."""
    flagged = _studio_flagged_methods()
    assert {"AnalyzeForIntellisearch", "CreateMagicMask", "SmartReframe"} <= flagged  # the parser sees the flags
    assert sorted(_script_api_calls() & flagged) == []


def test_the_shipped_example_config_loads(tmp_path):
    example = SCRIPT.with_name("deid_edit_anonymize.example.json")
    config = dv.load_config({}, str(example))
    assert set(json.loads(example.read_text())) == set(dv.DEFAULTS)
    assert config["clip_color"] == "Orange"


def test_the_readme_free_and_studio_section_quotes_only_the_reference():
    """plugins/davinci/README.md says what Free and Studio allow only in the reference's words: every
    quotation there (pieces around an ellipsis) must be found in the 21.0.2 scripting README."""
    reference = " ".join(_readme_text().split())
    readme = (SCRIPT.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Resolve Free and Studio") :]
    section = re.sub(r"`[^`]*`", "", section[: section.index("\n## ", 3)])  # code spans are not quotations
    quotes = re.findall(r'"([^"]{12,})"', section)
    assert len(quotes) >= 8, quotes
    for quote in quotes:
        for piece in (" ".join(p.split()) for p in quote.split("…")):
            assert piece in reference, piece


@pytest.mark.media
def test_phone_clip_with_an_edit_list_is_anonymized_and_placed(tmp_path):
    """phone_selfie.mp4 (its MP4 edit list hides one of the 32 frames the header counts) through the
    real CLI: placed above its original over the same source range, the file showing the 31 frames."""
    import av
    from conftest import footage

    src = footage("phone_selfie.mp4")
    resolve = StandInResolve(timeline_kwargs={"fps": 30.0, "start_frame": 108000, "video_tracks": 1})
    clip = resolve.media(src, fps=30.0)
    resolve.timeline.add_clip(1, clip, 0, 31, 108000, color="Orange")
    out_dir = tmp_path / "anon"
    results = dv.main(resolve, _config(clip_color="Orange", output_dir=str(out_dir)))
    assert [r.status for r in results] == ["placed"], [r.message for r in results]
    output = out_dir / "phone_selfie.deid-solid.mp4"
    with av.open(str(output)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 31
    (placed,) = resolve.timeline.GetItemListInTrack("video", 2)
    assert (placed.GetStart(), placed.GetEnd()) == (108000, 108031)
