"""Still photos: every mode on a photo with a known face, EXIF orientation, metadata, group photos,
--keep, batch alongside videos."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED, cli_main
from PIL import Image, PngImagePlugin

from deid_edit.photo import photo_metadata
from deid_edit.render import ANONYMIZERS
from deid_edit.sample import GRACE_HOPPER, load_photo, photo_path

FACE = np.array(GRACE_HOPPER.face)  # x1, y1, x2, y2 in the photo


def grace(tmp_path: Path, name: str = "grace.png") -> Path:
    path = tmp_path / name
    Image.fromarray(load_photo(photo_path(GRACE_HOPPER))).save(path)
    return path


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def inner(box: np.ndarray, shrink: float = 0.3) -> tuple[slice, slice]:
    """The central part of a box (eyes, nose, mouth), as array slices."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * shrink, (y2 - y1) * shrink
    return slice(int(y1 + dy), int(y2 - dy)), slice(int(x1 + dx), int(x2 - dx))


@pytest.mark.parametrize("mode", sorted(m for m in ANONYMIZERS if m != "debug"))
def test_every_mode_on_a_photo(mode, tmp_path, capsys):
    src = grace(tmp_path)
    out = tmp_path / f"out.{mode}.png"
    code, stdout, err = cli_main(capsys, "run", str(src), "-o", str(out), "--mode", mode, "--color", "255,0,255", "--progress", "none")
    assert code == 0, err
    assert stdout.strip().splitlines()[-1].endswith(f": {out}")
    a, b = pixels(src), pixels(out)
    assert a.shape == b.shape
    ys, xs = inner(FACE)
    if mode == "matte":  # white where the face is, black elsewhere
        assert b[ys, xs].mean() > 240 and b[:40, :40].mean() < 10
        return
    if mode == "cloak":  # a different face with the same pose and light: the recognizer must not match it
        from deid_edit.embed import SAME_PERSON_L2
        from deid_edit.errors import InputError
        from deid_edit.identities import reference_descriptors

        try:
            d = reference_descriptors([str(src), str(out)], recognizer="exact")
            assert np.linalg.norm(d[0] - d[1]) > SAME_PERSON_L2
        except InputError:  # no face left: blurred, because the cloak failed the check under a test view
            assert np.abs(a[ys, xs] - b[ys, xs]).mean() > 20, "the face must change"
    else:
        assert np.abs(a[ys, xs] - b[ys, xs]).mean() > 20, "the face must change"
    assert np.array_equal(a[:60, :60], b[:60, :60]) or mode == "cloak" and np.abs(a[:60, :60] - b[:60, :60]).mean() < 1
    if mode == "solid":
        assert (np.abs(b[ys, xs] - [255, 0, 255]).max(axis=2) < 3).mean() > 0.99


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_orientation_is_applied(orientation, tmp_path, capsys):
    """A camera stores the sensor's pixels and an orientation tag: the output is upright (tag
    applied, then dropped) and the face masked where a viewer sees it."""
    upright = load_photo(photo_path(GRACE_HOPPER))
    stored = np.rot90(upright, 1 if orientation == 6 else -1)  # what exif_transpose turns back upright
    src = tmp_path / f"o{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(np.ascontiguousarray(stored)).save(src, quality=95, exif=exif.tobytes())
    out = tmp_path / f"o{orientation}.anon.jpg"
    code, _, err = cli_main(capsys, "run", str(src), "-o", str(out), "--mode", "solid", "--color", "255,0,255", "--progress", "none")
    assert code == 0, err
    img = Image.open(out)
    assert img.size == (upright.shape[1], upright.shape[0]) and img.getexif().get(0x0112) in (None, 1)
    b = pixels(out)
    ys, xs = inner(FACE)
    assert (np.abs(b[ys, xs] - [255, 0, 255]).max(axis=2) < 40).mean() > 0.95


def test_photo_metadata_removed_and_kept_on_request(tmp_path, capsys):
    """JPEG with EXIF GPS, device and date; PNG with text chunks: gone by default, there with
    --keep-metadata; the colour profile stays either way."""
    rgb = load_photo(photo_path(GRACE_HOPPER))
    icc = b"\x00" * 128 + b"acsp" + b"\x00" * 100  # an opaque profile: carried as bytes
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0132] = "Canon", "EOS R5", "2026:01:01 10:00:00"
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (37.0, 25.0, 19.0)
    jpg = tmp_path / "gps.jpg"
    Image.fromarray(rgb).save(jpg, quality=95, exif=exif.tobytes(), icc_profile=icc)
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Jane Doe")
    info.add_text("Comment", "at the safe house")
    png = tmp_path / "text.png"
    Image.fromarray(rgb).save(png, pnginfo=info)
    assert photo_metadata(jpg) and photo_metadata(png)
    for src in (jpg, png):
        out = tmp_path / f"anon.{src.name}"
        code, _, err = cli_main(capsys, "run", str(src), "-o", str(out), "--progress", "none")
        assert code == 0, err
        assert photo_metadata(out) == [] and "metadata removed" in err, photo_metadata(out)
        kept = tmp_path / f"kept.{src.name}"
        code, _, err = cli_main(capsys, "run", str(src), "-o", str(kept), "--keep-metadata", "--progress", "none")
        assert code == 0, err
        assert photo_metadata(kept) == photo_metadata(src)
    assert Image.open(tmp_path / "anon.gps.jpg").info.get("icc_profile") == icc
    assert b"Jane" not in (tmp_path / "anon.text.png").read_bytes() and b"Jane" in (tmp_path / "kept.text.png").read_bytes()


@pytest.mark.slow  # ~2 s
def test_keep_a_person_in_a_photo(tmp_path, capsys):
    """Two people side by side; --keep with a photo of one leaves her face and masks the other."""
    from deid_edit.sample import ASTRONAUT

    a, b = load_photo(photo_path(GRACE_HOPPER)), load_photo(photo_path(ASTRONAUT))
    h = a.shape[0]
    b2 = np.asarray(Image.fromarray(b).resize((b.shape[1] * h // b.shape[0], h)))
    pair = np.hstack([a, b2])
    src = tmp_path / "pair.png"
    Image.fromarray(pair).save(src)
    out = tmp_path / "pair.anon.png"
    code, _, err = cli_main(
        capsys, "run", str(src), "-o", str(out), "--mode", "solid", "--color", "255,0,255", "--keep", str(photo_path(GRACE_HOPPER)),
        "--progress", "none",
    )  # fmt: skip
    assert code == 0, err
    assert "kept visible: 1 track" in err, err
    px = pixels(out)
    ys, xs = inner(FACE)
    assert np.array_equal(px[ys, xs], pair[ys, xs].astype(int)), "the kept face is untouched"
    s = h / b.shape[0]
    other = np.array(ASTRONAUT.face) * s + [a.shape[1], 0, a.shape[1], 0]
    ys, xs = inner(other)
    assert (np.abs(px[ys, xs] - [255, 0, 255]).max(axis=2) < 3).mean() > 0.95


@pytest.mark.slow  # ~3 s
def test_batch_takes_photos_alongside_videos(sample_clip, tmp_path, capsys):
    import json

    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(sample_clip[0], src / "clip.mp4")
    grace(src, "still.png")
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    code, _, _ = cli_main(capsys, "batch", str(src), "-o", str(out), "--progress", "none", "--preset", "ultrafast")
    rows = {Path(r["file"]).name: r for r in json.loads((out / "deid-edit-summary.json").read_text())["files"]}
    assert code == 1 and rows["still.png"]["status"] == "done" and rows["clip.mp4"]["status"] == "done"
    assert rows["broken.jpg"]["status"] == "failed" and "broken.jpg" in rows["broken.jpg"]["error"]
    assert (out / "still.png").is_file() and not np.array_equal(pixels(out / "still.png"), pixels(src / "still.png"))


@pytest.mark.slow  # ~65 s
@pytest.mark.media
def test_group_photos_every_detected_face_masked(tmp_path, capsys):
    """Group photos of ../shared (dozens of small faces): every face the detector finds in the
    original at full resolution is solid in the output."""
    from deid_edit.config import AnalyzeConfig
    from deid_edit.photo import detect_photo

    folder = SHARED / "faces" / "group_photos"
    if not folder.is_dir():
        pytest.skip("../shared/faces/group_photos not present")
    photos = sorted(folder.glob("*.jpg"))
    total = 0
    for photo in photos:
        out = tmp_path / f"{photo.stem}.anon.jpg"
        code, _, err = cli_main(capsys, "run", str(photo), "-o", str(out), "--mode", "solid", "--color", "255,0,255", "--progress", "none")
        assert code == 0, err
        det = detect_photo(np.asarray(Image.open(photo).convert("RGB")), AnalyzeConfig())
        assert len(det) >= 1, photo
        total += len(det)
        px = pixels(out)
        for box in det.boxes:
            ys, xs = inner(box, 0.35)
            patch = px[ys, xs]
            if patch.size:
                assert (np.abs(patch - [255, 0, 255]).max(axis=2) < 60).mean() > 0.9, (photo.name, box)
    assert len(photos) >= 10 and total >= 5 * len(photos)


def test_unreadable_photo_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 nope")
    code, _, err = cli_main(capsys, "run", str(bad), "--progress", "none")
    assert code == 1 and "bad.jpg" in err and "not a readable photo" in err
    assert not (tmp_path / "bad.anon.jpg").exists()


@pytest.mark.slow  # ~4 s
def test_audit_and_faces_accept_photos(tmp_path, capsys):
    """The audit compares photos as viewers see them (orientation applied) and fails on a copy
    that keeps the face or the EXIF; faces lists a photo's faces."""
    upright = load_photo(photo_path(GRACE_HOPPER))
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = 6, "Canon"
    src = tmp_path / "turned.jpg"
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1))).save(src, quality=95, exif=exif.tobytes())
    anon, kept = tmp_path / "anon.jpg", tmp_path / "kept.jpg"
    assert cli_main(capsys, "run", str(src), "-o", str(anon), "--mode", "solid", "--progress", "none")[0] == 0
    assert cli_main(capsys, "run", str(src), "-o", str(kept), "--mode", "solid", "--keep-metadata", "--progress", "none")[0] == 0
    code, out, _ = cli_main(capsys, "audit", str(src), str(anon), "--progress", "none")
    assert code == 0 and "OK" in out, out
    code, out, _ = cli_main(capsys, "audit", str(src), str(kept), "--progress", "none")
    assert code == 3 and "EXIF" in out, out
    copy = tmp_path / "copy.jpg"
    shutil.copy(src, copy)
    assert cli_main(capsys, "audit", str(src), str(copy), "--progress", "none")[0] == 3
    code, out, _ = cli_main(capsys, "faces", str(src), "-o", str(tmp_path / "faces"), "--progress", "none")
    assert code == 0 and "person 0" in out and (tmp_path / "faces" / "contact_sheet.png").is_file()


@pytest.mark.slow  # ~1.8 s
def test_heic_in_heic_out(tmp_path, capsys):
    """iPhone photos: HEIC read and written through pillow-heif, EXIF left out, face masked."""
    from pillow_heif import register_heif_opener

    register_heif_opener()
    exif = Image.Exif()
    exif[0x010F] = "Apple"
    src = tmp_path / "phone.heic"
    Image.fromarray(load_photo(photo_path(GRACE_HOPPER))).save(src, exif=exif.tobytes(), quality=90)
    out = tmp_path / "phone.anon.heic"
    code, _, err = cli_main(capsys, "run", str(src), "-o", str(out), "--mode", "solid", "--color", "255,0,255", "--progress", "none")
    assert code == 0, err
    assert Image.open(out).format == "HEIF" and photo_metadata(src) and photo_metadata(out) == []
    ys, xs = inner(FACE)
    assert (np.abs(pixels(out)[ys, xs] - [255, 0, 255]).max(axis=2) < 40).mean() > 0.9


@pytest.mark.slow  # ~1.2 s a format
@pytest.mark.parametrize("suffix", [".tif", ".webp"])
def test_tiff_and_webp_same_format_out(suffix, tmp_path, capsys):
    """TIFF and WebP: written back in their format, the device tag gone, the layout tags TIFF
    needs not mistaken for identifying metadata (the audit passes)."""
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    src = tmp_path / f"cam{suffix}"
    Image.fromarray(load_photo(photo_path(GRACE_HOPPER))).save(src, exif=exif.tobytes())
    assert photo_metadata(src)
    out = tmp_path / f"cam.anon{suffix}"
    code, _, err = cli_main(capsys, "run", str(src), "-o", str(out), "--mode", "solid", "--color", "255,0,255", "--progress", "none")
    assert code == 0, err
    assert Image.open(out).format == Image.open(src).format and photo_metadata(out) == []
    ys, xs = inner(FACE)
    assert (np.abs(pixels(out)[ys, xs] - [255, 0, 255]).max(axis=2) < 40).mean() > 0.9
    code, text, _ = cli_main(capsys, "audit", str(src), str(out), "--progress", "none")
    assert code == 0, text
