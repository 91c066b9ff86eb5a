"""Tracking and temporal completion on fake detections (pure numpy)."""

from __future__ import annotations

import numpy as np

from deid_edit.config import TrackConfig
from deid_edit.shots import shots_from_cuts
from deid_edit.smooth import Scene, complete_tracks
from deid_edit.track import track_video
from deid_edit.types import FrameDetections


def dets(n: int, faces: dict[int, list[tuple[float, float, float, float, float]]]) -> list[FrameDetections]:
    out = []
    for f in range(n):
        rows = faces.get(f, [])
        if rows:
            arr = np.asarray(rows, np.float32)
            out.append(FrameDetections(f, arr[:, :4], arr[:, 4], None))
        else:
            out.append(FrameDetections.empty(f))
    return out


def moving(n: int, x0: float, dx: float, drop: set[int] = frozenset(), score: float = 0.9):
    return {f: [(x0 + dx * f, 50, x0 + dx * f + 60, 130, score)] for f in range(n) if f not in drop}


def test_dropouts_are_filled_and_marked():
    faces = moving(30, 10, 3, drop={10, 11, 12, 20})
    shots = shots_from_cuts([], 30)
    cfg = TrackConfig()
    tracks = complete_tracks(track_video(dets(30, faces), shots, cfg, 0.5), shots, cfg)
    assert len(tracks) == 1
    t = tracks[0]
    assert t.frames.tolist() == list(range(30))
    assert not t.observed[[10, 11, 12, 20]].any() and t.observed[[0, 9, 13, 29]].all()
    # interpolated boxes follow the motion, and uncertainty grows away from observations
    assert abs(t.boxes[11, 0] - (10 + 3 * 11)) < 3
    assert t.margin[11] > t.margin[10] > 0 and t.margin[9] == 0


def test_extension_clipped_to_shot_and_no_crossing_cuts():
    faces = {**moving(20, 10, 0), **{f: [(12, 50, 72, 130, 0.9)] for f in range(20, 40)}}
    shots = shots_from_cuts([20], 40)
    cfg = TrackConfig(extend=4)
    tracks = complete_tracks(track_video(dets(40, faces), shots, cfg, 0.5), shots, cfg)
    assert len(tracks) == 2, "a face at the same place after a cut is a new track"
    assert tracks[0].end == 20 and tracks[1].start == 20


def test_extension_before_and_after():
    faces = {f: v for f, v in moving(100, 10, 1).items() if 40 <= f < 60}
    shots = shots_from_cuts([], 100)
    cfg = TrackConfig(extend=4)
    (t,) = complete_tracks(track_video(dets(100, faces), shots, cfg, 0.5), shots, cfg, SCENE)
    assert t.start == 36 and t.end == 64
    assert not t.observed[:4].any() and t.margin[0] > 0


SCENE = Scene(width=640, height=360, rate=25.0)


def test_face_lost_near_a_cut_stays_covered_up_to_it():
    """hamilton frame 81: the detector loses a head swinging into the cut 5 frames early."""
    faces = {f: v for f, v in moving(100, 100, 4).items() if 20 <= f < 45}  # the cut is at 50
    faces.update({f: [(300, 50, 360, 130, 0.9)] for f in range(56, 100)})  # starts 6 frames after it
    shots = shots_from_cuts([50], 100)
    cfg = TrackConfig(extend=2)
    a, b = complete_tracks(track_video(dets(100, faces), shots, cfg, 0.5), shots, cfg, SCENE)
    assert a.end == 50, "held up to the cut"
    assert b.start == 50, "taken back to the cut"
    # the held boxes keep moving with the face (then stop) and grow with the distance
    centre = (a.boxes[:, 0] + a.boxes[:, 2]) / 2
    assert centre[-1] > centre[a.frames.tolist().index(44)] + 10
    assert a.boxes[-1, 2] >= 100 + 4 * 49 + 60 - 1, "the face's predicted place at the cut is inside the box"
    assert a.margin[-1] > a.margin[-3] > 0
    # far from a cut, the plain extension
    alone = {f: [(300, 50, 360, 130, 0.9)] for f in range(70, 80)}
    far = complete_tracks(track_video(dets(100, alone), shots, cfg, 0.5), shots, cfg, SCENE)
    assert far[0].start == 68 and far[0].end == 82


def test_a_gap_between_two_tracks_at_one_place_is_covered():
    """hamilton frames 57-62: a profile at the edge is lost for 14 frames and found again nearby."""
    faces = {f: [(500 + f, 40, 600 + f, 200, 0.9)] for f in range(10, 40)}
    faces.update({f: [(520 + f, 60, 618 + f, 230, 0.9)] for f in range(54, 90)})  # another track later
    faces.update({f: [(20, 40, 80, 120, 0.9)] for f in range(10, 20)})  # someone far away, ending early
    shots = shots_from_cuts([], 120)
    cfg = TrackConfig(extend=2, max_gap=5)
    tracks = complete_tracks(track_video(dets(120, faces), shots, cfg, 0.5), shots, cfg, Scene(1280, 720, 25.0))
    first = next(t for t in tracks if t.start <= 10 and t.boxes[0, 0] > 400)
    assert first.end == 54, "carried over the gap to where the next track starts"
    gap = first.frames >= 40
    assert not first.observed[gap].any()
    # interpolated between the two ends, and surer near them than in the middle of the gap
    mid = first.frames.tolist().index(47)
    assert 540 < first.boxes[mid, 0] + 0.0 < 575
    assert first.margin[mid] > first.margin[first.frames.tolist().index(41)]
    far = next(t for t in tracks if t.boxes[0, 0] < 100)
    assert far.end == 22, "a track that nothing picks up nearby gets the plain extension"


def test_a_head_leaving_the_frame_stays_covered_while_in_the_picture():
    """The detector drops a face half out of the picture; the mask follows it until it is gone."""
    faces = {f: [(400 + 10 * f, 100, 480 + 10 * f, 200, 0.9)] for f in range(0, 20)}  # at 20 its box reaches 680
    shots = shots_from_cuts([], 100)
    cfg = TrackConfig(extend=2)
    (t,) = complete_tracks(track_video(dets(100, faces), shots, cfg, 0.5), shots, cfg, SCENE)
    # followed while the head around the face (half a box beyond it) may be in the picture; the
    # prediction stops after MOTION_FRAMES with the head still touching the edge, so it is held
    # for the full hold_edge (1 s): fail closed
    assert t.end == 20 + SCENE.frames(TrackConfig().hold_edge), t.end
    for f in range(20, 24):  # while the face (x1 = 400 + 10 f) is in the picture, the box holds it
        assert t.boxes[f, 0] <= 400 + 10 * f and t.boxes[f, 2] >= 480 + 10 * f
    # a head far from any edge and not moving gets the plain extension
    still = {f: [(300, 100, 380, 200, 0.9)] for f in range(30, 50)}
    (s,) = complete_tracks(track_video(dets(100, still), shots, cfg, 0.5), shots, cfg, SCENE)
    assert s.end == 52
    # entering from the left: covered back to where it came in
    enter = {f: [(-60 + 8 * (f - 50), 100, 20 + 8 * (f - 50), 200, 0.9)] for f in range(58, 80)}
    (e,) = complete_tracks(track_video(dets(100, enter), shots, cfg, 0.5), shots, cfg, SCENE)
    assert e.start < 56 and e.boxes[0, 2] > 0


def test_low_score_detections_continue_but_do_not_start_tracks():
    faces = moving(20, 10, 2)
    for f in range(8, 12):
        faces[f] = [(10 + 2 * f, 50, 70 + 2 * f, 130, 0.25)]  # blurred: low score
    faces[5] = faces[5] + [(300, 300, 340, 350, 0.25)]  # low-score noise elsewhere
    shots = shots_from_cuts([], 20)
    cfg = TrackConfig(max_gap=0)
    raw = track_video(dets(20, faces), shots, cfg, 0.5)
    assert len(raw) == 1 and len(raw[0].frames) == 20


def test_two_faces_crossing_keep_their_tracks():
    a = {f: [(10 + 8 * f, 50, 70 + 8 * f, 130, 0.9)] for f in range(30)}
    b = {f: [(250 - 8 * f, 60, 310 - 8 * f, 140, 0.9)] for f in range(30)}
    faces = {f: a[f] + b[f] for f in range(30)}
    shots = shots_from_cuts([], 30)
    cfg = TrackConfig()
    raw = track_video(dets(30, faces), shots, cfg, 0.5)
    assert len(raw) == 2
    for t in raw:
        xs = np.asarray(t.boxes)[:, 0]
        assert np.all(np.diff(xs) > 0) or np.all(np.diff(xs) < 0), "tracks swapped identities"


def test_smoothing_never_shrinks_below_detection():
    rng = np.random.default_rng(1)
    faces = {f: [(100 + rng.normal(0, 3), 50 + rng.normal(0, 3), 160 + rng.normal(0, 3), 130 + rng.normal(0, 3), 0.9)] for f in range(40)}
    shots = shots_from_cuts([], 40)
    cfg = TrackConfig(extend=0)
    (t,) = complete_tracks(track_video(dets(40, faces), shots, cfg, 0.5), shots, cfg)
    raw = np.asarray([faces[f][0][:4] for f in range(40)], np.float32)
    assert np.all(t.boxes[:, :2] <= raw[:, :2] + 1e-4) and np.all(t.boxes[:, 2:] >= raw[:, 2:] - 1e-4)


def test_landmarks_are_smoothed_and_follow_motion():
    """Detector noise on the 5 points is taken out (the cloak aligns by them); a steady motion is kept."""
    rng = np.random.default_rng(2)
    n = 40
    base = np.array([[120, 80], [140, 80], [130, 95], [122, 110], [138, 110]], np.float32)
    true = np.stack([base + [2.0 * f, 0] for f in range(n)])
    noisy = true + rng.normal(0, 1.5, true.shape).astype(np.float32)
    box = lambda f: np.array([[100 + 2.0 * f, 50, 160 + 2.0 * f, 130]], np.float32)  # noqa: E731
    out = [FrameDetections(f, box(f), np.array([0.9], np.float32), noisy[f : f + 1]) for f in range(n)]
    shots = shots_from_cuts([], n)
    cfg = TrackConfig(extend=0)
    (t,) = complete_tracks(track_video(out, shots, cfg, 0.5), shots, cfg)
    inner = slice(6, n - 6)  # away from the ends, where the edge padding bends the path
    err_raw = np.abs(noisy[inner] - true[inner]).mean()
    err_smooth = np.abs(t.landmarks[inner] - true[inner]).mean()
    assert err_smooth < 0.5 * err_raw, (err_smooth, err_raw)
    jitter = lambda lm: np.linalg.norm(np.diff(lm - true, axis=0), axis=2).mean()  # noqa: E731
    assert jitter(t.landmarks) < 0.5 * jitter(noisy)
    assert abs(np.diff(t.landmarks[inner, :, 0], axis=0).mean() - 2.0) < 0.1  # the motion is kept


def test_small_face_sweep_only_in_busy_scenes():
    """Busy scenes (several or small faces) get a full-resolution pass whose extra faces are merged."""
    from fractions import Fraction

    from deid_edit.config import DetectConfig
    from deid_edit.pipeline import SmallFaceSweep
    from deid_edit.types import Frame

    class Stub:
        calls = 0

        def detect(self, images, indices, scale, threshold):
            Stub.calls += 1
            box = np.array([[500, 500, 520, 524], [100, 100, 200, 220]], np.float32)  # a tiny face + a known one
            return [FrameDetections(indices[0], box, np.array([0.8, 0.9], np.float32), np.zeros((2, 5, 2), np.float32))]

    cfg = DetectConfig()
    sweep = SmallFaceSweep(Stub(), cfg, 0.15, Fraction(25))
    big = FrameDetections(2, np.array([[100, 100, 200, 220]], np.float32), np.array([0.9], np.float32), np.zeros((1, 5, 2), np.float32))
    full = np.zeros((8, 8, 3), np.uint8)
    sweep.run(Frame(3, 3, Fraction(1, 25), full[:4, :4], full), [big])
    assert Stub.calls == 0, "one large face is not a busy scene"
    crowd = FrameDetections(
        5, np.array([[0, 0, 50, 60], [100, 0, 150, 60], [200, 0, 250, 60]], np.float32), np.full(3, 0.9, np.float32), None
    )
    sweep.run(Frame(6, 6, Fraction(1, 25), full[:4, :4], full), [crowd])
    assert Stub.calls == 1
    merged = sweep.merge(FrameDetections(6, big.boxes, big.scores, big.landmarks))
    assert len(merged) == 2, "the duplicate of the known face is suppressed, the tiny face added"
    assert sweep.merge(big) is big  # nothing pending for another frame


def test_persistent_low_score_face_becomes_a_track():
    """A dim or defocused face the detector only ever scores low (never above the confident
    threshold) must still be masked once it persists; a low-score flicker must not."""
    dim = moving(40, 10, 1, drop={12, 13, 14, 25}, score=0.15)  # 36 weak hits with gaps
    flicker = {f: [(300, 50, 340, 100, 0.15)] for f in (5, 9, 16)}  # 3 hits: noise
    faces = {f: dim.get(f, []) + flicker.get(f, []) for f in range(40)}
    shots = shots_from_cuts([], 40)
    cfg = TrackConfig(weak_hits=8)
    tracks = complete_tracks(track_video(dets(40, faces), shots, cfg, 0.3), shots, cfg)
    assert len(tracks) == 1, "the persistent face is a track, the flicker is not"
    t = tracks[0]
    assert t.frames.tolist() == list(range(40)), "its gaps are filled and it covers every frame"
    assert abs(t.boxes[13, 0] - 23) < 3
    off = complete_tracks(track_video(dets(40, faces), shots, TrackConfig(weak_hits=0), 0.3), shots, TrackConfig(weak_hits=0))
    assert off == [], "with weak_hits=0 low scores never start a track (the ByteTrack rule alone)"


def test_weak_track_turns_confident_and_keeps_short_confident_rules():
    """A track born from low scores that later gets a confident detection is an ordinary track,
    kept even when it is shorter than weak_hits."""
    faces = {f: [(10, 50, 70, 130, 0.15 if f < 3 else 0.9)] for f in range(5)}
    shots = shots_from_cuts([], 5)
    cfg = TrackConfig(weak_hits=8, extend=0)
    (t,) = complete_tracks(track_video(dets(5, faces), shots, cfg, 0.3), shots, cfg)
    assert t.frames.tolist() == [0, 1, 2, 3, 4] and t.observed.all()


def test_loose_duplicate_boxes_of_a_followed_face_start_nothing():
    """CenterFace often adds a looser low-score box on a face it already found (hamilton's audience:
    0.10-0.16 next to a 0.4-0.6 box). It must neither become a track of its own nor take the face's
    detections from the face's track (which would split one person into two)."""
    face = moving(40, 10, 2)
    faces = {f: face[f] + [(10 + 2 * f + 12, 40, 10 + 2 * f + 70, 120, 0.12)] for f in range(40)}
    shots = shots_from_cuts([], 40)
    cfg = TrackConfig(weak_hits=8)
    raw = track_video(dets(40, faces), shots, cfg, 0.3)
    assert len(raw) == 1 and raw[0].frames.tolist() == list(range(40))
    assert min(raw[0].scores) > 0.5, "the face's track kept its own detections"


def test_tiny_low_score_boxes_start_no_weak_track():
    """A persistent low-score box far under --min-face (a lamp, a pattern) is not a weak track;
    the same box at face size is."""
    shots = shots_from_cuts([], 30)
    cfg = TrackConfig(weak_hits=8)
    tiny = {f: [(300, 200, 311, 214, 0.15)] for f in range(30)}
    assert track_video(dets(30, tiny), shots, cfg, 0.3, weak_min_side=18) == []
    sized = {f: [(300, 200, 330, 238, 0.15)] for f in range(30)}
    assert len(track_video(dets(30, sized), shots, cfg, 0.3, weak_min_side=18)) == 1


def test_weak_track_needs_landmarks_in_face_order():
    """Low-score boxes on hands come with scrambled landmarks (eyes under the mouth); on a dim face
    they keep the layout. Only the second becomes a weak track."""
    box = np.array([[300, 200, 340, 250]], np.float32)
    face = np.array([[[310, 215], [330, 215], [320, 225], [312, 238], [328, 238]]], np.float32)
    upside_down = face.copy()
    upside_down[0, :, 1] = 450 - upside_down[0, :, 1]
    shots = shots_from_cuts([], 30)
    cfg = TrackConfig(weak_hits=8)
    for lms, expect in ((face, 1), (upside_down, 0)):
        frames = [FrameDetections(f, box, np.array([0.15], np.float32), lms) for f in range(30)]
        assert len(track_video(frames, shots, cfg, 0.3)) == expect


def test_raw_track_keeps_observations_compact_and_exact():
    """An open shot's tracks live as long as the shot (a one-take interview, a live camera): each
    observation is stored in growing arrays, read back exactly, and ``since`` copies the tail."""
    from deid_edit.track import RawTrack

    rng = np.random.default_rng(5)
    boxes = (rng.random((3000, 4)) * 500).astype(np.float32)
    lms = (rng.random((3000, 5, 2)) * 500).astype(np.float32)
    t = RawTrack(7, 0)
    for f in range(3000):
        t.add(2 * f, boxes[f], float(np.float32(0.5 + f / 10000)), lms[f], f % 3)
    assert len(t) == 3000 and t.frames.tolist() == list(range(0, 6000, 2))
    assert t.boxes.tobytes() == boxes.tobytes() and np.asarray(t.landmarks).tobytes() == lms.tobytes()
    assert t.det_indices.tolist() == [f % 3 for f in range(3000)]
    held = sum(getattr(t, n).nbytes for n in ("_frames", "_boxes", "_scores", "_landmarks", "_has_lm", "_det"))
    assert held <= 2 * 3000 * 77  # 77 bytes an observation, doubled at most by the room to grow
    tail = t.since(5000)
    assert tail.frames.tolist() == list(range(5000, 6000, 2)) and tail.boxes.tobytes() == boxes[2500:].tobytes()
    tail.add(6000, boxes[0], 0.9, None)
    assert len(t) == 3000 and tail.landmarks[-1] is None  # the copy grows alone; a missing landmark reads None
    assert np.array_equal(t.predict(6000), t.boxes[-1] + t.velocity * 2)
