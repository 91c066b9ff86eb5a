"""Footage as phones, cameras and edit suites make it (tests/quirks.py): every quirk runs through
``deid-edit run`` and comes out showing the same frames at the same times, size, rotation, bit
depth, colour tags, field order, timecode and audio, with the face anonymized."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import quirks
from conftest import cli_main, footage


@pytest.fixture(scope="session")
def base_frames(sample_clip) -> tuple[list[np.ndarray], object]:
    """The sample clip's RGB frames (a real face in each) and its ground truth."""
    path, truth = sample_clip
    with av.open(str(path)) as c:
        rgb = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return rgb, truth


def _sharpness(img: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def _frame(path: Path, index: int) -> np.ndarray:
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i == index:
                return f.to_ndarray(format="rgb24")
    raise AssertionError(f"{path} has no frame {index}")


@pytest.mark.slow  # the corpus: ~150 s in all (5-21 s a quirk)
@pytest.mark.parametrize("name", list(quirks.QUIRKS))
def test_quirk_is_kept_exactly(name: str, base_frames, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rgb, truth = base_frames
    filename, maker = quirks.QUIRKS[name]
    src = tmp_path / filename
    expect = maker(src, rgb)
    before = quirks.shown(src)
    # the generated file really has the quirk (else the test below proves nothing)
    assert len(before.times) == expect.frames
    assert before.times == expect.times
    assert (before.width, before.height, before.pix_fmt) == (expect.width, expect.height, expect.pix_fmt)
    assert len(before.audio) == expect.audio_streams
    for key, value in expect.color.items():
        assert before.color[key] == value
    if expect.color:
        assert set(before.hdr) == {"MASTERING_DISPLAY_METADATA", "CONTENT_LIGHT_LEVEL"}
    if expect.field_order:
        assert before.field_order == expect.field_order
    if expect.timecode:
        assert before.timecode == expect.timecode
    if expect.header_frames:
        assert before.header_frames == expect.header_frames != expect.frames

    out = tmp_path / f"out{src.suffix}"
    code, stdout, stderr = cli_main(capsys, "run", str(src), "-o", str(out))
    assert code == 0, stderr
    after = quirks.shown(out)
    assert after.times == before.times  # every frame, at its time
    assert (after.width, after.height, after.rotation, after.pix_fmt) == (before.width, before.height, before.rotation, before.pix_fmt)
    assert after.color == before.color
    assert after.hdr == before.hdr  # HDR10 mastering display and light level, byte for byte
    assert after.field_order == before.field_order
    assert after.timecode == before.timecode
    assert after.audio == before.audio  # bit-exact audio, every stream
    assert after.audio_seconds == before.audio_seconds
    if expect.header_frames:
        assert "header counts" in stderr  # said, not refused

    # the face is anonymized: a middle frame's face box lost its detail, the background did not
    i = expect.frames // 2
    src_index = i + expect.offset
    box = truth.faces[src_index][0] * np.array([expect.width / truth.width, expect.height / truth.height] * 2)
    x0, y0, x1, y1 = (int(v) for v in box)
    pad_x, pad_y = (x1 - x0) // 4, (y1 - y0) // 4
    a, b = _frame(src, i), _frame(out, i)
    inner = (slice(y0 + pad_y, y1 - pad_y), slice(x0 + pad_x, x1 - pad_x))
    assert _sharpness(b[inner]) < 0.2 * _sharpness(a[inner])
    corner = (slice(0, expect.height // 6), slice(0, expect.width // 6))
    assert np.abs(a[corner].astype(int) - b[corner].astype(int)).mean() < 6


@pytest.mark.slow  # ~1.9 s
def test_truncated_file_is_refused_before_the_render(base_frames, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file cut short (its header promises more frames than its data holds) is still an error:
    an edit list is not an excuse for missing frames."""
    rgb, _ = base_frames
    src = tmp_path / "clip.mp4"
    with av.open(str(src), "w", format="mp4", options={"movflags": "faststart"}) as out:
        v = quirks._video(out, "libx264", (rgb[0].shape[1], rgb[0].shape[0]), "yuv420p", {}, quirks.Fraction(1, 12800))
        quirks._interleave(out, quirks._encode(v, rgb))
    cut = tmp_path / "cut.mp4"
    data = src.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    out = tmp_path / "cut.anon.mp4"
    code, _, stderr = cli_main(capsys, "run", str(cut), "-o", str(out))
    assert code != 0
    lines = [line for line in stderr.strip().splitlines() if "error" in line]
    assert len(lines) == 1 and str(cut) in lines[0]
    assert not out.exists()


@pytest.mark.media
def test_phone_edit_list_runs_through(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """phone_selfie.mp4: its edit list hides one of the 32 frames its header counts; the output
    shows the 31 a player shows, at the same times, with the same audio, and --otio works."""
    src = footage("phone_selfie.mp4")
    out = tmp_path / "selfie.anon.mp4"
    timeline = tmp_path / "selfie.otio"
    code, _, stderr = cli_main(capsys, "run", str(src), "-o", str(out), "--otio", str(timeline))
    assert code == 0, stderr
    before, after = quirks.shown(src), quirks.shown(out)
    assert before.header_frames == 32 and len(before.times) == 31
    assert after.times == before.times
    assert after.audio == before.audio and after.audio_seconds == before.audio_seconds
    assert (after.width, after.height, after.rotation) == (before.width, before.height, before.rotation)
    assert "header counts 32 frames, 31 are shown" in stderr
    import opentimelineio as otio

    tl = otio.adapters.read_from_file(str(timeline))
    clips = [c for t in tl.video_tracks() for c in t.find_clips()]
    assert clips and all(c.source_range.duration.value == 31 for c in clips)
