"""Still photos: a JPEG, PNG, WebP, TIFF or HEIC in, the same format out, every face anonymized.

Journalists anonymize photos as well as footage. A photo is treated as a one-frame video: the
detector runs at full resolution (and at twice that on small photos, for small faces in group
pictures), each face becomes a one-sample track, and the video's own plan, selection
(``--keep``/``--only``, decided per face) and anonymizers draw the regions, so a photo and a frame
of video are covered alike. The EXIF orientation is applied (the output is stored upright); EXIF,
XMP, IPTC, GPS and text chunks are left out unless ``keep_metadata`` (then the orientation tag is
reset, as the pixels are already upright); the colour profile is kept. HEIC needs the optional
``pillow-heif`` package. Next stage: none (the output file).
"""

from __future__ import annotations

import io
import logging
import os
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from .config import AnalyzeConfig, EncodeConfig, RenderConfig
from .detect import create_detector
from .errors import EncodeError, InputError
from .geometry import nms
from .identities import DescriptorSampler, Selection, SelectionReport, build_identities
from .io.atomic import write_atomic
from .io.decode import fingerprint
from .plan import Plan
from .render import get_anonymizer
from .types import FrameDetections, Track, VideoInfo

log = logging.getLogger(__name__)

PHOTO_SUFFIXES = {
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".png": "PNG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".heic": "HEIF",
    ".heif": "HEIF",
}
SMALL_PHOTO = 1600  # long side below which a second pass at 2x finds faces under ~20 px
ORIENTATION = 0x0112
# TIFF/EXIF tags that describe the pixels, not where, when, with what or by whom they were taken
# (baseline TIFF layout, resolution, orientation, colour; TIFF files carry them as "EXIF" too)
_STRUCTURAL_TAGS = frozenset(
    {254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 274, 277, 278, 279, 280, 281, 282, 283, 284, 290, 291, 296, 297}
    | {317, 318, 319, 320, 321, 322, 323, 324, 325, 338, 339, 340, 341, 530, 531, 532, 34675}
)


def is_photo(path: Path) -> bool:
    """A still image we can anonymize (by extension; the content is checked when opened)."""
    return path.suffix.lower() in PHOTO_SUFFIXES


def _heif() -> bool:
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


def load_photo(path: Path) -> tuple[np.ndarray, np.ndarray | None, dict[str, object]]:
    """(upright RGB, alpha or None, what to carry over: format, ICC profile, EXIF, XMP, PNG text)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if path.suffix.lower() in (".heic", ".heif") and not _heif():
        raise InputError(f"{path}: HEIC needs the pillow-heif package; run 'pip install pillow-heif' or convert the photo to JPEG")
    try:
        img = Image.open(path)
        img.load()
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"{path}: not a readable photo ({exc}); give a JPEG, PNG, WebP, TIFF or HEIC file") from exc
    carry: dict[str, object] = {"format": img.format, "icc_profile": img.info.get("icc_profile")}
    upright = ImageOps.exif_transpose(img)  # before the tag below is reset on img's own EXIF
    exif = img.getexif()
    if exif:
        exif[ORIENTATION] = 1  # the pixels are stored upright
        carry["exif"] = exif.tobytes()
    if img.info.get("xmp"):
        carry["xmp"] = img.info["xmp"]
    carry["text"] = {k: v for k, v in getattr(img, "text", {}).items()} if img.format == "PNG" else {}
    alpha = np.asarray(upright.getchannel("A")) if "A" in upright.getbands() else None
    return np.asarray(upright.convert("RGB")), alpha, carry


def upright_copy(path: Path, out: Path) -> Path:
    """``path`` as a plain upright PNG (EXIF orientation applied, no metadata), for the readers
    that know only pixels (the audit, the contact sheet)."""
    from PIL import Image

    rgb, _, _ = load_photo(path)
    Image.fromarray(rgb).save(out, format="PNG")
    return out


def detect_photo(rgb: np.ndarray, cfg: AnalyzeConfig) -> FrameDetections:
    """Faces at full resolution, plus a 2x pass on small photos; merged by NMS."""
    import cv2

    detector = create_detector(cfg.detect)
    (det,) = detector.detect([rgb], [0], 1.0, cfg.detect.threshold)  # type: ignore[attr-defined]
    if max(rgb.shape[:2]) < SMALL_PHOTO:
        big = cv2.resize(rgb, None, fx=2.0, fy=2.0, interpolation=cv2.INTER_CUBIC)
        (more,) = detector.detect([big], [0], 2.0, cfg.detect.threshold)  # type: ignore[attr-defined]
        if len(more):
            boxes = np.concatenate([det.boxes, more.boxes])
            scores = np.concatenate([det.scores, more.scores])
            lms = np.concatenate([det.landmarks, more.landmarks]) if det.landmarks is not None and more.landmarks is not None else None
            keep = nms(boxes, scores, 0.3)
            det = FrameDetections(0, boxes[keep], scores[keep], None if lms is None else lms[keep])
    return det


def photo_plan(path: Path, rgb: np.ndarray, cfg: AnalyzeConfig) -> Plan:
    """A one-frame plan: one track per face (with its descriptor when identifiable)."""
    det = detect_photo(rgb, cfg)
    idcfg = replace(cfg.identity, min_samples=1, every=1)  # a photo has one sample per face
    sampler = DescriptorSampler(idcfg) if cfg.identity.enabled and len(det) else None
    if sampler is not None:
        sampler.add(rgb, det, 1.0, cfg.detect.threshold)
    tracks = []
    for i in range(len(det)):
        emb, n = sampler.track_embedding([0], [i]) if sampler is not None else (None, 0)
        tracks.append(
            Track(
                i,
                0,
                np.array([0]),
                det.boxes[i : i + 1],
                det.scores[i : i + 1],
                None if det.landmarks is None else det.landmarks[i : i + 1],
                np.ones(1, bool),
                np.zeros(1, np.float32),
                emb,
                n,
            )  # fmt: skip
        )
    h, w = rgb.shape[:2]
    info = VideoInfo(
        str(path), w, h, w, h, 0, 1, Fraction(1, 1), Fraction(1), Fraction(1), "photo", "rgb24", path.stat().st_size, fingerprint(path)
    )
    config = {**cfg.to_dict(), "metadata_removed": None}  # photo_metadata reports a photo's own
    config["identity"] = {**config["identity"], "min_samples": 1}
    return Plan(info, (), (det,), tuple(tracks), tuple(build_identities(tracks, cfg.identity.link_threshold)), config, "deid-edit photo")


def save_photo(path: Path, rgb: np.ndarray, alpha: np.ndarray | None, carry: dict[str, object], keep_metadata: bool, force: bool) -> Path:
    """Write ``rgb`` in the source's format, atomically, readable per the umask; metadata per policy."""
    from PIL import Image, PngImagePlugin

    fmt = PHOTO_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise EncodeError(f"{path}: unknown photo extension; use .jpg, .png, .webp, .tif or .heic")
    if fmt == "HEIF" and not _heif():
        raise EncodeError(f"{path}: writing HEIC needs the pillow-heif package; run 'pip install pillow-heif' or write .jpg")
    img = Image.fromarray(rgb)
    if alpha is not None and fmt in ("PNG", "WEBP", "TIFF"):
        img.putalpha(Image.fromarray(alpha))
    opts: dict[str, object] = {}
    if carry.get("icc_profile"):
        opts["icc_profile"] = carry["icc_profile"]
    if fmt == "JPEG":
        opts.update(quality=95, subsampling=0)
    elif fmt == "WEBP":
        opts.update(quality=95)
    if keep_metadata:
        if carry.get("exif") and fmt != "PNG":
            opts["exif"] = carry["exif"]
        if carry.get("xmp") and fmt in ("JPEG", "WEBP"):
            opts["xmp"] = carry["xmp"]
        if fmt == "PNG" and (carry.get("text") or carry.get("exif")):
            info = PngImagePlugin.PngInfo()
            for k, v in dict(carry.get("text") or {}).items():
                info.add_text(str(k), str(v))
            opts["pnginfo"] = info
            if carry.get("exif"):
                opts["exif"] = carry["exif"]
    buf = io.BytesIO()
    img.save(buf, format=fmt, **opts)
    if path.exists() and not force:
        raise EncodeError(f"{path}: already exists; use --force to overwrite it or choose another name")
    write_atomic(path, buf.getvalue(), EncodeError, "the photo", "check the folder and free space")  # umask permissions, like any new file
    return path


def run_photo(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    analyze_cfg: AnalyzeConfig | None = None,
    render_cfg: RenderConfig | None = None,
    encode_cfg: EncodeConfig | None = None,
    selection: Selection | None = None,
    on_selection: object | None = None,
) -> tuple[Path, Plan, SelectionReport | None]:
    """Anonymize one photo into ``output`` (same format); returns the output, the plan used and the
    selection report (None without --keep/--only)."""
    from .pipeline import apply_selection, check_output, selection_references

    src, out = Path(source), Path(output)
    acfg, rcfg, ecfg = analyze_cfg or AnalyzeConfig(), render_cfg or RenderConfig(), encode_cfg or EncodeConfig()
    if not src.is_file():
        raise InputError(f"{src}: no such file; check the path")
    check_output(src, out, ecfg.force)
    if out.suffix.lower() not in PHOTO_SUFFIXES:
        raise EncodeError(f"{out}: a photo is written as a photo; use .jpg, .png, .webp, .tif or .heic")
    refs = selection_references(selection, acfg.identity.recognizer)
    rgb, alpha, carry = load_photo(src)
    plan = photo_plan(src, rgb, acfg)
    plan, report = apply_selection(plan, selection, replace(acfg.identity, min_samples=1), refs, on_selection)  # type: ignore[arg-type]
    anonymizer = get_anonymizer(rcfg.mode)
    image = rgb.copy()
    regions = plan.regions_at(0, include_kept=not anonymizer.hides_faces)
    if regions or anonymizer.full_frame:
        anonymizer.apply(image, regions, rcfg)  # in place, as on video frames
    log.info("%s: %d faces, %d anonymized", src, len(plan.tracks), len(regions))
    return save_photo(out, np.ascontiguousarray(image), alpha, carry, ecfg.keep_metadata, ecfg.force), plan, report


def photo_metadata(path: str | os.PathLike[str]) -> list[str]:
    """What a photo carries that could locate or identify its source: EXIF (GPS, device, dates),
    XMP, IPTC, comments, PNG text chunks (the ICC colour profile is not among them)."""
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if p.suffix.lower() in (".heic", ".heif"):
        _heif()
    try:
        img = Image.open(p)
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"{p}: not a readable photo ({exc}); give a JPEG, PNG, WebP, TIFF or HEIC file") from exc
    with img:
        found = []
        exif = img.getexif()
        tags = [k for k in exif if k not in _STRUCTURAL_TAGS]
        if tags or exif.get_ifd(0x8825):
            found.append(f"EXIF ({len(tags)} tags{', GPS' if exif.get_ifd(0x8825) else ''})")
        for key in ("xmp", "XML:com.adobe.xmp", "comment", "photoshop", "iptc"):
            if img.info.get(key):
                found.append(key.split(":")[0].upper())
        found += [f"text chunk {k}" for k in getattr(img, "text", {}) if img.format == "PNG"]
        return found
