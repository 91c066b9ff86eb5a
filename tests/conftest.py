"""Shared fixtures: generated clips with exact ground truth, the real footage in ../shared, and a
guard that fails any test which logged an ERROR."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import av
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEID_EDIT_SHARED", ROOT.parent / "shared"))
FOOTAGE = SHARED / "footage"


def footage(name: str) -> Path:
    """Path of a clip in ../shared/footage; skips (saying why) on machines without it."""
    path = FOOTAGE / name
    if not path.is_file():
        pytest.skip(f"needs ../shared/footage/{name} (real footage, present in CI); not found at {path}")
    return path


def cli_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run deid-edit in-process through ``main`` (the exit-code contract); (code, stdout, stderr)."""
    from deid_edit.cli import main

    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def _no_error_logs(caplog: pytest.LogCaptureFixture, request: pytest.FixtureRequest):
    """Any ERROR logged during a test is a failure unless the test is marked ``allow_error_log``."""
    package_logger = logging.getLogger("deid_edit")
    package_logger.handlers[:] = []  # undo what an earlier CLI test configured, so caplog sees records
    package_logger.propagate = True
    caplog.set_level(logging.WARNING)
    yield
    if request.node.get_closest_marker("allow_error_log"):
        return
    errors = [r for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert not errors, f"test logged errors: {[r.getMessage() for r in errors]}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "allow_error_log: the test expects ERROR log records")


@pytest.fixture(scope="session")
def sample_clip(tmp_path_factory: pytest.TempPathFactory):
    """(path, truth) of the generated two-shot clip with audio (CFR)."""
    from deid_edit.sample import make_sample_clip

    path = tmp_path_factory.mktemp("clips") / "sample.mp4"
    truth = make_sample_clip(path, frames=40, cut_frame=20)
    return path, truth


@pytest.fixture(scope="session")
def vfr_clip(tmp_path_factory: pytest.TempPathFactory):
    """(path, truth) of a generated variable-frame-rate clip with audio."""
    from deid_edit.sample import make_sample_clip

    path = tmp_path_factory.mktemp("clips") / "sample_vfr.mp4"
    truth = make_sample_clip(path, width=642, height=362, frames=30, cut_frame=15, vfr=True)
    return path, truth


# -- one default analysis per clip for the whole session. Plans are frozen dataclasses, but their
# config is a dict and their tracks hold numpy arrays: treat a shared plan as read-only (a test that
# needs another plan builds it with dataclasses.replace); teardown fails if one was changed in place.
# Tests of analyze itself, or of the CLI's analyze, keep running their own.
def _fingerprint(plan) -> str:
    return hashlib.sha256(json.dumps(plan.to_json(), sort_keys=True).encode()).hexdigest()


def _shared(plan, name: str):
    before = _fingerprint(plan)
    yield plan
    assert _fingerprint(plan) == before, f"a test changed the shared {name} in place (use dataclasses.replace)"


@pytest.fixture(scope="session")
def sample_plan(sample_clip):
    """The Plan of ``analyze(sample_clip)`` with default settings, analyzed once per session."""
    from deid_edit import analyze

    yield from _shared(analyze(sample_clip[0]), "sample_plan")


@pytest.fixture(scope="session")
def vfr_plan(vfr_clip):
    """The Plan of ``analyze(vfr_clip)`` with default settings, analyzed once per session."""
    from deid_edit import analyze

    yield from _shared(analyze(vfr_clip[0]), "vfr_plan")


@pytest.fixture(scope="session")
def footage_plan():
    """``footage_plan(name)``: the default-settings Plan of ../shared/footage/name, analyzed once per
    session (skips, like :func:`footage`, where the footage is absent)."""
    from deid_edit import analyze

    plans: dict[str, tuple[object, str]] = {}

    def plan_of(name: str):
        path = footage(name)
        if name not in plans:
            plan = analyze(path)
            plans[name] = (plan, _fingerprint(plan))
        return plans[name][0]

    yield plan_of
    changed = [name for name, (plan, before) in plans.items() if _fingerprint(plan) != before]
    assert not changed, f"a test changed the shared plan of {changed} in place (use dataclasses.replace)"


def decoded(path: Path) -> dict:
    """What the output must keep, read back with PyAV: frames, timestamps, geometry, audio."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        cc = v.codec_context
        pts, rotation, size = [], 0, None
        for f in c.decode(v):
            pts.append(f.time)
            rotation = f.rotation
            size = (f.width, f.height)
        meta = {
            "frames": len(pts),
            "times": pts,
            "size": size,
            "rotation": rotation,
            "sar": v.sample_aspect_ratio,
            "colour": (cc.color_range, cc.color_primaries, cc.color_trc, cc.colorspace),
            "pix_fmt": cc.pix_fmt,
            "codec": cc.name,
            "audio_streams": len(c.streams.audio),
        }
    audio_packets: dict[int, list[bytes]] = {}
    with av.open(str(path)) as c:
        if c.streams.audio:
            audio_packets = {i: [] for i in range(len(c.streams.audio))}
            order = {s.index: i for i, s in enumerate(c.streams.audio)}
            for p in c.demux(c.streams.audio):
                if p.size:
                    audio_packets[order[p.stream.index]].append(bytes(p))
    meta["audio_packets"] = audio_packets
    return meta
