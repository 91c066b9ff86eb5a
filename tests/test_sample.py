"""Tests of deid_edit.sample: the generated clips decode to exactly what SampleTruth says.

Every other test that uses a sample clip trusts its truth (size, pts, face boxes), so the truth
itself is checked here against an independent decode with PyAV.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
from pathlib import Path

import av
import numpy as np
import pytest

from deid_edit.errors import InputError
from deid_edit.sample import SampleTruth, main, make_sample_clip


def decode_video(path: Path) -> tuple[list[np.ndarray], list[int], object]:
    """All decoded frames as RGB arrays, their pts, and the stream's time base."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        time_base = stream.time_base
        frames, pts = [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            pts.append(frame.pts)
    return frames, pts, time_base


@pytest.fixture(scope="module")
def cfr(sample_clip: tuple[Path, SampleTruth]) -> tuple[Path, SampleTruth]:
    return sample_clip  # conftest's: make_sample_clip(path, frames=40, cut_frame=20), made once a session


@pytest.fixture(scope="module")
def vfr(vfr_clip: tuple[Path, SampleTruth]) -> tuple[Path, SampleTruth]:
    return vfr_clip  # conftest's: 642x362, 30 frames, the cut at 15, variable frame rate


@pytest.mark.parametrize("clip", ["cfr", "vfr"])
def test_decodes_to_truth(clip: str, request: pytest.FixtureRequest) -> None:
    path, truth = request.getfixturevalue(clip)
    frames, pts, time_base = decode_video(path)
    assert len(frames) == truth.frame_count == len(truth.pts) == len(truth.faces)
    assert all(f.shape == (truth.height, truth.width, 3) for f in frames)
    assert time_base == truth.time_base
    assert pts == list(truth.pts)
    assert all(b > a for a, b in itertools.pairwise(pts))


def test_cfr_durations_equal(cfr: tuple[Path, SampleTruth]) -> None:
    durations = set(np.diff(cfr[1].pts).tolist())
    assert len(durations) == 1


def test_vfr_durations_vary(vfr: tuple[Path, SampleTruth]) -> None:
    _, truth = vfr
    durations = np.diff(truth.pts)
    assert len(set(durations.tolist())) >= 3
    # the asked time base 1/(fps*100) is kept, or refined by an integer factor by the muxer
    assert truth.time_base.numerator == 1 and truth.time_base.denominator % 2500 == 0


@pytest.mark.parametrize("clip", ["cfr", "vfr"])
def test_audio_tone(clip: str, request: pytest.FixtureRequest) -> None:
    path, truth = request.getfixturevalue(clip)
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "aac"
        assert stream.rate == 48000 and stream.channels == 2
        samples = np.concatenate([f.to_ndarray() for f in container.decode(stream)], axis=1)
    duration = float((truth.pts[-1] - truth.pts[0]) * truth.time_base)
    assert samples.shape[0] == 2
    assert samples.shape[1] / 48000 >= duration
    spectrum = np.abs(np.fft.rfft(samples[0, 4800:52800]))  # one second, past the encoder ramp-up
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins


def test_face_boxes_plausible(cfr: tuple[Path, SampleTruth]) -> None:
    _, truth = cfr
    for boxes in truth.faces:
        assert len(boxes) == 1
        box = boxes[0]
        assert box.shape == (4,) and box.dtype == np.float32
        x1, y1, x2, y2 = box.tolist()
        assert 0 <= x1 < x2 <= truth.width and 0 <= y1 < y2 <= truth.height
        assert 0.25 * truth.height < y2 - y1 < 0.45 * truth.height
        assert 0.6 < (x2 - x1) / (y2 - y1) < 1.4
    # the camera moves: boxes differ between first and last frame of each shot
    first, last = truth.faces[0][0], truth.faces[truth.cut_frame - 1][0]
    assert np.abs(first - last).max() > 10


def test_cut_is_visible(cfr: tuple[Path, SampleTruth]) -> None:
    """Across the cut the picture changes far more than between neighbouring frames of a shot."""
    path, truth = cfr
    frames, _, _ = decode_video(path)
    mean = [f.reshape(-1, 3).mean(axis=0) for f in frames]
    steps = [float(np.abs(b - a).sum()) for a, b in itertools.pairwise(mean)]
    cut = steps[truth.cut_frame - 1]
    assert cut > 5 * max(steps[: truth.cut_frame - 1] + steps[truth.cut_frame :])


def test_sources(cfr: tuple[Path, SampleTruth]) -> None:
    names = [Path(s).name for s in cfr[1].sources]
    assert names == ["grace_hopper.jpg", "astronaut.png"]


def test_odd_but_even_size_kept(tmp_path: Path) -> None:
    path = tmp_path / "odd.mp4"
    truth = make_sample_clip(path, width=642, height=362, frames=6, cut_frame=3, audio=False)
    frames, pts, _ = decode_video(path)
    assert (truth.width, truth.height) == (642, 362)
    assert [f.shape for f in frames] == [(362, 642, 3)] * 6
    assert pts == list(truth.pts)
    with av.open(str(path)) as container:
        assert not container.streams.audio


@pytest.mark.parametrize("size", [(641, 360), (640, 361)])
def test_odd_size_rejected(size: tuple[int, int], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        make_sample_clip(tmp_path / "x.mp4", width=size[0], height=size[1], frames=2, cut_frame=1)


def test_deterministic(tmp_path: Path) -> None:
    digests = []
    for name in ("a.mkv", "b.mkv"):
        make_sample_clip(tmp_path / name, width=160, height=90, frames=6, cut_frame=3, vfr=True, seed=3)
        digests.append(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_missing_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "skimage" else real(name, *a))
    with pytest.raises(InputError, match=r"pip install 'deid-edit\[demo\]'"):
        make_sample_clip(tmp_path / "x.mp4", frames=2, cut_frame=1)


@pytest.mark.slow  # ~2.6 s: the 100-frame demo clip
def test_main(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "demo.mp4"
    assert main([str(path)]) == 0
    assert capsys.readouterr().out.strip() == str(path)
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        assert (video.width, video.height, video.frames) == (640, 360, 100)
        assert container.streams.audio


def test_detector_finds_truth(cfr: tuple[Path, SampleTruth]) -> None:
    """CenterFace finds the photo faces where the truth says, in both shots (IoU > 0.4). The model
    ships with the package and ONNX Runtime is a core dependency: a ModelError here (missing or
    corrupt model) is a broken product and fails the test."""
    from deid_edit.detect.centerface import CenterFace

    detector = CenterFace()
    path, truth = cfr
    frames, _, _ = decode_video(path)
    for i in (0, truth.cut_frame - 1, truth.cut_frame, truth.frame_count - 1):
        found = detector.detect([frames[i]], [i], 1.0, 0.35)[0]
        gt = truth.faces[i][0]
        assert max((iou(box, gt) for box in found.boxes), default=0.0) > 0.4, f"frame {i}"


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))
