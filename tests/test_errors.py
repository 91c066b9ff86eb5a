"""Bad input gets one clear line naming the file, a non-zero exit, the input untouched and nothing
at the final output path — one test per case, through the real CLI entry point."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import footage, sha256

from deid_edit.cli import main


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run deid-edit in-process; returns (exit code, stderr)."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def assert_clean_failure(code: int, err: str, name: str, out: Path, expected_code: int | None = None) -> None:
    assert code != 0
    if expected_code is not None:
        assert code == expected_code
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {err!r}"
    assert name in lines[0]
    assert not out.exists(), "a file was left at the output path"
    assert not list(out.parent.glob(f".{out.stem}.*part*")) if out.parent.exists() else True


@pytest.fixture()
def out(tmp_path: Path) -> Path:
    return tmp_path / "out" / "result.mp4"


def test_missing_file(capsys, tmp_path, out):
    code, err = cli(capsys, "run", str(tmp_path / "nope.mp4"), "-o", str(out))
    assert_clean_failure(code, err, "nope.mp4", out, 1)
    assert "no such file" in err


def test_directory_as_input(capsys, tmp_path, out):
    d = tmp_path / "folder.mp4"
    d.mkdir()
    code, err = cli(capsys, "run", str(d), "-o", str(out))
    assert_clean_failure(code, err, "folder.mp4", out, 1)
    assert "batch" in err


def test_text_file_named_mp4(capsys, tmp_path, out):
    f = tmp_path / "notes.mp4"
    f.write_text("this is not a video\n")
    before = sha256(f)
    code, err = cli(capsys, "run", str(f), "-o", str(out))
    assert_clean_failure(code, err, "notes.mp4", out, 1)
    assert sha256(f) == before


def test_zero_byte_file(capsys, tmp_path, out):
    f = tmp_path / "empty.mp4"
    f.touch()
    code, err = cli(capsys, "run", str(f), "-o", str(out))
    assert_clean_failure(code, err, "empty.mp4", out, 1)
    assert "empty" in err


def _truncate(src: Path, dst: Path) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def test_truncated_generated_mp4(capsys, tmp_path, out, sample_clip):
    f = _truncate(sample_clip[0], tmp_path / "half.mp4")
    before = sha256(f)
    code, err = cli(capsys, "run", str(f), "-o", str(out))
    assert_clean_failure(code, err, "half.mp4", out, 1)
    assert sha256(f) == before


@pytest.mark.media
def test_truncated_real_footage(capsys, tmp_path, out):
    f = _truncate(footage("hamilton_stage.mp4"), tmp_path / "hamilton_half.mp4")
    code, err = cli(capsys, "run", str(f), "-o", str(out))
    assert_clean_failure(code, err, "hamilton_half.mp4", out, 1)


@pytest.mark.slow  # ~2 s
def test_truncated_with_index_first(capsys, tmp_path, out):
    """A 'faststart' file cut short opens fine but runs out of frames: still refused, nothing written."""
    from deid_edit.sample import make_sample_clip

    full = tmp_path / "fs.mp4"
    make_sample_clip(full, frames=30, cut_frame=15)
    faststart = tmp_path / "faststart.mp4"
    with av.open(str(full)) as src, av.open(str(faststart), "w", options={"movflags": "faststart"}) as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for p in src.demux():
            if p.dts is not None:
                p.stream = streams[p.stream.index]
                dst.mux(p)
    f = _truncate(faststart, tmp_path / "cut.mp4")
    code, err = cli(capsys, "run", str(f), "-o", str(out))
    assert_clean_failure(code, err, "cut.mp4", out, 1)


def test_audio_only_file(capsys, tmp_path, out):
    f = tmp_path / "voice.mp4"
    with av.open(str(f), "w") as c:
        s = c.add_stream("aac", rate=48000)
        s.layout = "mono"
        t = np.arange(48000, dtype=np.float32) / 48000
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 48000
        frame.pts = 0
        frame.time_base = Fraction(1, 48000)
        for p in s.encode(frame):
            c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    code, err = cli(capsys, "run", str(f), "-o", str(out))
    assert_clean_failure(code, err, "voice.mp4", out, 1)
    assert "no video stream" in err


def test_output_exists_refused_without_force(capsys, sample_clip, tmp_path):
    existing = tmp_path / "keep.mp4"
    existing.write_bytes(b"precious")
    code, err = cli(capsys, "run", str(sample_clip[0]), "-o", str(existing))
    assert code == 1
    assert "keep.mp4" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert existing.read_bytes() == b"precious"


def test_output_is_input(capsys, sample_clip, tmp_path):
    f = tmp_path / "same.mp4"
    shutil.copy(sample_clip[0], f)
    before = sha256(f)
    for extra in ([], ["--force"]):
        code, err = cli(capsys, "run", str(f), "-o", str(f), *extra)
        assert code == 1 and "same.mp4" in err and "input" in err
        assert sha256(f) == before


def test_unwritable_output_directory(capsys, sample_clip, tmp_path):
    if os.geteuid() == 0:
        target = Path("/proc/deid-edit-test/out.mp4")  # even root cannot create folders in /proc
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = locked / "out.mp4"
    code, err = cli(capsys, "run", str(sample_clip[0]), "-o", str(target))
    assert code == 1 and "out.mp4" in err and len(err.strip().splitlines()) == 1
    assert not target.exists()


def test_unknown_mode(capsys, sample_clip, out):
    code, err = cli(capsys, "run", str(sample_clip[0]), "-o", str(out), "--mode", "sparkles")
    assert code == 2
    assert "sparkles" in err and "blur" in err
    assert not out.exists()


@pytest.mark.parametrize("value", ["-1", "7", "abc"])
def test_bad_padding(capsys, sample_clip, out, value):
    code, err = cli(capsys, "run", str(sample_clip[0]), "-o", str(out), "--padding", value)
    assert code == 2
    assert "padding" in err
    assert not out.exists()


@pytest.mark.slow  # ~15 s: a 720p clip of 150 frames, interrupted
def test_ctrl_c_removes_partial_output(tmp_path):
    """SIGINT during render: exit 130, no output, no temporary file left beside it."""
    from deid_edit.sample import make_sample_clip

    src = tmp_path / "long.mp4"
    make_sample_clip(src, width=1280, height=720, frames=150, cut_frame=75)
    before = sha256(src)
    outdir = tmp_path / "o"
    outdir.mkdir()
    target = outdir / "long.anon.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "deid_edit", "run", str(src), "-o", str(target), "--progress", "json", "--preset", "veryslow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        if json.loads(line).get("stage") == "render" or time.monotonic() > deadline:
            break
    time.sleep(0.5)
    assert list(outdir.iterdir()), "no temporary file while rendering?"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert list(outdir.iterdir()) == []
    assert sha256(src) == before


def test_hardware_encoder_without_its_driver_fails_before_analysis(sample_clip, tmp_path):
    """--codec h264_nvenc: FFmpeg lists the encoder everywhere; where it cannot open (no NVIDIA
    driver, as on the CPU machines of CI) the run stops at once with advice, before analyzing."""
    import av

    from deid_edit.config import EncodeConfig
    from deid_edit.errors import ConfigError
    from deid_edit.io.codecs import check_codec

    src, _ = sample_clip
    try:
        cc = av.CodecContext.create("h264_nvenc", "w")
        cc.width, cc.height, cc.pix_fmt = 256, 256, "yuv420p"
        cc.open()
        opens = True
    except Exception:
        opens = False
    if opens:
        assert check_codec(EncodeConfig(codec="h264_nvenc")) is not None
        return
    with pytest.raises(ConfigError, match="NVIDIA GPU with its driver.*--codec h264"):
        check_codec(EncodeConfig(codec="h264_nvenc"))
    out = tmp_path / "nv.mp4"
    argv = [sys.executable, "-m", "deid_edit", "run", str(src), "-o", str(out), "--codec", "h264_nvenc"]
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 2 and "NVIDIA" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_cloak_without_a_model_fails_before_analysis(sample_clip, tmp_path, monkeypatch):
    """--mode cloak with no generator available stops at once with what to do (while no model
    ships) instead of analyzing first; a missing DEID_EDIT_CLOAK_MODEL file is named."""
    from deid_edit.models import manifest

    src, _ = sample_clip
    out = tmp_path / "c.mp4"
    monkeypatch.delenv("DEID_EDIT_CLOAK_MODEL", raising=False)
    argv = [sys.executable, "-m", "deid_edit", "run", str(src), "-o", str(out), "--mode", "cloak"]
    env = {k: v for k, v in os.environ.items() if k != "DEID_EDIT_CLOAK_MODEL"}
    if "cloak" not in manifest():
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        assert proc.returncode == 1 and "no cloak model ships" in proc.stderr and "--mode blur" in proc.stderr
        assert not out.exists()
    missing = tmp_path / "nope.onnx"
    proc = subprocess.run(argv, capture_output=True, text=True, env={**env, "DEID_EDIT_CLOAK_MODEL": str(missing)}, timeout=60)
    assert proc.returncode == 1 and str(missing) in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_ctrl_c_is_honoured_even_when_the_host_ignores_it(sample_clip, tmp_path):
    """Hosts that start the CLI with SIGINT ignored (a background job of a non-interactive shell,
    some GUI apps running the editor plugins) must still be able to cancel it with SIGINT."""
    src, _ = sample_clip
    target = tmp_path / "x.mp4"
    proc = subprocess.Popen(
        [sys.executable, "-m", "deid_edit", "run", str(src), "-o", str(target), "--progress", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert proc.stdout is not None
    proc.stdout.readline()  # running: its first progress line
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert not target.exists() and list(tmp_path.iterdir()) == []
