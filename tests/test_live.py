"""Live video: a generated clip streamed over UDP on 127.0.0.1 (or played from a file at its own rate)
is anonymized at a fixed latency; no frame leaves unprocessed, also when the analysis falls behind."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from conftest import ROOT

from deid_edit.config import AnalyzeConfig, RenderConfig
from deid_edit.detect import create_detector
from deid_edit.errors import ConfigError, InputError
from deid_edit.pipeline.live import live

sys.path.insert(0, str(ROOT / "benchmarks"))
from live import stream_through_live  # noqa: E402  (benchmarks/live.py)


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]


def detail(img: np.ndarray, box: np.ndarray) -> float:
    """Variance of the Laplacian in the middle half of ``box``: high on a sharp face, low on a blur."""
    x1, y1, x2, y2 = box.astype(int)
    w, h = x2 - x1, y2 - y1
    core = img[y1 + h // 4 : y2 - h // 4, x1 + w // 4 : x2 - w // 4]
    return float(cv2.Laplacian(cv2.cvtColor(core, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def assert_every_face_hidden(out: Path, src: Path, truth, sent: list[int]) -> None:
    """Output frame k is source frame ``sent[k]``: its face has lost most of its detail."""
    got, orig = frames_of(out), frames_of(src)
    assert len(got) == len(sent)
    for k, i in enumerate(sent):
        for box in truth.faces[i]:
            before, after = detail(orig[i], box), detail(got[k], box)
            assert after < 0.2 * before, f"frame {i}: the face kept {after / before:.0%} of its detail"


def test_udp_in_file_out(sample_clip, tmp_path):
    """The sample clip over UDP (MPEG-TS on 127.0.0.1) into a file: every frame arrives and leaves
    (a late one fully blurred: how many depends on the machine, see benchmarks/live.py) with its
    face hidden, one latency after it arrived."""
    src, truth = sample_clip
    out = tmp_path / "live.ts"
    stats = stream_through_live(src, out, 1.0, "blur")
    assert stats.frames_in == truth.frame_count and stats.frames_out == truth.frame_count
    assert stats.dropped == 0
    assert stats.latency(50) >= 1.0, "a frame never leaves before its latency"
    assert_every_face_hidden(out, src, truth, list(range(truth.frame_count)))


class SlowDetector:
    """The real detector, made slower than the frame rate (a machine that cannot keep up)."""

    def __init__(self, delay: float) -> None:
        self.inner, self.delay = create_detector(AnalyzeConfig().detect), delay
        self.provider = self.inner.provider

    def detect(self, *args, **kwargs):
        time.sleep(self.delay)
        return self.inner.detect(*args, **kwargs)


@pytest.mark.parametrize("policy", ["drop", "blur"])
def test_late_frames_are_dropped_or_fully_blurred(sample_clip, tmp_path, policy):
    """A detector slower than the clip's 25 fps: late frames are dropped or sent fully blurred (and
    counted); every frame sent still has its face hidden."""
    src, truth = sample_clip
    out = tmp_path / f"late_{policy}.ts"
    stats = live(str(src), str(out), latency=0.3, when_late=policy, detector=SlowDetector(0.12), render_cfg=RenderConfig())
    late = stats.dropped if policy == "drop" else stats.blurred
    assert late > 0, "the slow detector must make some frames late (else this tests nothing)"
    assert stats.frames_in == truth.frame_count
    assert stats.frames_out + stats.dropped == truth.frame_count
    got = frames_of(out)
    assert len(got) == stats.frames_out
    if policy == "blur":
        assert_every_face_hidden(out, src, truth, list(range(truth.frame_count)))
    else:
        # which frames were dropped is not known from outside: every frame sent is some source frame
        # whose face is hidden, in order; match each to the source frame it is closest to
        orig = frames_of(src)
        j = 0
        sent = []
        for g in got:
            while j < len(orig) - 1 and np.abs(orig[j + 1].astype(int) - g).mean() < np.abs(orig[j].astype(int) - g).mean():
                j += 1
            sent.append(j)
            j += 1
        assert_every_face_hidden(out, src, truth, sent)


def test_bad_sources_and_options_fail_clearly(tmp_path):
    with pytest.raises(InputError, match="no such file, camera or stream URL"):
        live(str(tmp_path / "missing.mp4"), str(tmp_path / "o.ts"))
    with pytest.raises(ConfigError, match="--when-late"):
        live(str(tmp_path / "x.mp4"), str(tmp_path / "o.ts"), when_late="wait")
    with pytest.raises(ConfigError, match="unknown stream type"):
        from deid_edit.pipeline.live import output_format

        output_format("ftp://example/x")


def test_cli_live_reports_progress_and_refuses_what_needs_the_whole_video(sample_clip, tmp_path, capsys):
    """``deid-edit live`` on a file (played at its rate): JSON progress ends with the numbers; ids and
    --only need the whole video and are refused before anything runs."""
    import json

    from conftest import cli_main

    src, truth = sample_clip
    out = tmp_path / "cli.ts"
    code, stdout, stderr = cli_main(capsys, "live", str(src), str(out), "--latency", "0.5", "--progress", "json")
    assert code == 0, stderr
    events = [json.loads(line) for line in stdout.splitlines()]
    done = events[-1]
    assert done["stage"] == "done" and done["output"] == str(out)
    assert done["frames_in"] == truth.frame_count == done["frames_out"] + done["dropped"]
    assert len(frames_of(out)) == done["frames_out"]
    code, _, stderr = cli_main(capsys, "live", str(src), str(tmp_path / "x.ts"), "--keep-identity", "1")
    assert code != 0 and "identity ids and --only need the whole video" in stderr
    assert not (tmp_path / "x.ts").exists()
