"""Generated sample clips with known faces, for tests and demos.

Input: two public-domain portraits shipped in PyPI packages (matplotlib's ``grace_hopper.jpg``,
scikit-image's ``astronaut.png``; ``pip install 'deid-edit[demo]'``). Output: a short video (two shots
split by a hard cut, a moving camera, optionally variable frame rate and a 440 Hz AAC tone) and a
``SampleTruth`` (size, every frame's pts and true face box); next: tests score detection, tracking and
shot detection against it. Why real faces: the detector must actually find them. Deterministic for
the same arguments, so a failure reproduces. ``python -m deid_edit.sample OUT.mp4`` writes the demo clip.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from .errors import InputError

AUDIO_RATE = 48000
AUDIO_FRAME = 1024  # samples per AAC frame
TONE_HZ = 440.0
TONE_AMPLITUDE = 0.2
X264_THREADS = "4"  # fixed so the written bytes do not depend on the machine's core count
FACE_FRACTION = 1 / 3  # face height / frame height (of the shorter side)
WORLD_MARGIN = 1.3  # the background canvas is this much larger than the view, room to pan


@dataclass(frozen=True)
class _Photo:
    """One source portrait: where it lives, the crop pasted into the clip, and its face box.

    Boxes are xyxy in photo pixels (pixel edges, so ``x2`` is exclusive). The face boxes were set
    by hand on zoomed, gridded views of the photos: hairline/cap brim to chin, ear to ear. The crop
    keeps generous context (hair, cap, shoulders) because face detectors need it.
    """

    package: str
    relpath: str
    crop: tuple[int, int, int, int]
    face: tuple[int, int, int, int]


GRACE_HOPPER = _Photo("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", (70, 20, 450, 470), (156, 137, 371, 331))
ASTRONAUT = _Photo("skimage", "data/astronaut.png", (110, 10, 350, 270), (175, 73, 276, 178))


@dataclass(frozen=True)
class SampleTruth:
    """What ``make_sample_clip`` wrote, so tests can compare decoder and detector output to it."""

    width: int
    height: int
    frame_count: int
    cut_frame: int  # first frame of shot 2 (== frame_count when there is only one shot)
    time_base: Fraction  # of the written video stream; the muxer may pick a finer one than asked
    pts: tuple[int, ...]  # every frame's pts in ``time_base``, in display order
    faces: tuple[tuple[np.ndarray, ...], ...]  # per frame: (4,) float32 xyxy face boxes, output pixels
    sources: tuple[str, ...]  # photo files used, shot 1 first


def photo_path(photo: _Photo) -> Path:
    """The photo file inside its installed package, found without importing the package.

    Importing matplotlib or scikit-image costs seconds and may pull GUI backends; only the
    package folder is needed.
    """
    hint = "install the demo extras: pip install 'deid-edit[demo]'"
    try:
        spec = importlib.util.find_spec(photo.package)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise InputError(f"sample photo needs the {photo.package!r} package, which is not installed; {hint}")
    if spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations)))
    elif spec.origin:
        folder = Path(spec.origin).parent
    else:
        raise InputError(f"cannot locate the {photo.package!r} package folder; {hint}")
    path = folder / photo.relpath
    if not path.is_file():
        raise InputError(f"sample photo {path} is missing from the {photo.package!r} package; {hint}")
    return path


def load_photo(path: Path) -> np.ndarray:
    """The photo as an (H, W, 3) uint8 RGB array; ``InputError`` if OpenCV cannot read it."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"cannot read sample photo {path}; reinstall it: pip install 'deid-edit[demo]'")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _background(width: int, height: int, colors: tuple[tuple[int, int, int], ...], rng: np.random.Generator) -> np.ndarray:
    """A textured, non-uniform RGB canvas: diagonal gradient, soft random shapes, stripes, grain.

    Texture matters: on a flat background the camera motion would be invisible to motion-based
    trackers, and the encoder would spend no bits, which hides rate-control problems.
    """
    c0, c1, c2 = (np.asarray(c, np.float32) for c in colors)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    t = (xx / max(width - 1, 1) * 0.6 + yy / max(height - 1, 1) * 0.4)[..., None]
    img = c0 * (1 - t) + c1 * t
    # low-frequency blotches, so the gradient is not perfectly smooth
    small = rng.random((max(height // 40, 2), max(width // 40, 2), 1), dtype=np.float32)
    img += (cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)[..., None] - 0.5) * 40
    shapes = np.zeros((height, width, 3), np.float32)
    alpha = np.zeros((height, width), np.float32)
    side = min(width, height)
    for _ in range(18):
        color = (c2 * rng.uniform(0.6, 1.2) + rng.uniform(-30, 30, 3)).clip(0, 255).tolist()
        a = float(rng.uniform(0.25, 0.6))
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        mask = np.zeros((height, width), np.uint8)
        kind = int(rng.integers(0, 3))
        if kind == 0:
            cv2.circle(mask, center, int(rng.uniform(0.03, 0.12) * side), 255, -1, cv2.LINE_AA)
        elif kind == 1:
            half = (int(rng.uniform(0.03, 0.15) * side), int(rng.uniform(0.02, 0.08) * side))
            angle = float(rng.uniform(0, 180))
            box = cv2.boxPoints((center, (2 * half[0], 2 * half[1]), angle)).astype(np.int32)
            cv2.fillConvexPoly(mask, box, 255, cv2.LINE_AA)
        else:
            end = (center[0] + int(rng.uniform(-0.4, 0.4) * width), center[1] + int(rng.uniform(-0.4, 0.4) * height))
            cv2.line(mask, center, end, 255, max(int(0.01 * side), 2), cv2.LINE_AA)
        m = mask.astype(np.float32) / 255 * a
        shapes = shapes * (1 - m[..., None]) + np.asarray(color, np.float32) * m[..., None]
        alpha = alpha + m * (1 - alpha)
    img = img * (1 - alpha[..., None]) + shapes
    img += rng.normal(0, 4, img.shape).astype(np.float32)
    return img.clip(0, 255).astype(np.uint8)


def _paste_photo(world: np.ndarray, photo: np.ndarray, spec: _Photo, face_height: float, center: tuple[float, float]) -> np.ndarray:
    """Paste the photo's crop into ``world`` with feathered edges; return the face box in world pixels.

    The crop is scaled so the face is ``face_height`` tall and its face box is centred on
    ``center``. Box edges scale exactly like cv2.resize maps pixels (edge coordinates), so the
    returned box is exact up to the integer rounding of the pasted size, which is accounted for.
    """
    cx0, cy0, cx1, cy1 = spec.crop
    fx0, fy0, fx1, fy1 = spec.face
    crop = photo[cy0:cy1, cx0:cx1]
    scale = face_height / (fy1 - fy0)
    new_w, new_h = max(round((cx1 - cx0) * scale), 1), max(round((cy1 - cy0) * scale), 1)
    sx, sy = new_w / (cx1 - cx0), new_h / (cy1 - cy0)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    patch = cv2.resize(crop, (new_w, new_h), interpolation=interp).astype(np.float32)
    face_in_patch = np.array([(fx0 - cx0) * sx, (fy0 - cy0) * sy, (fx1 - cx0) * sx, (fy1 - cy0) * sy])
    # integer paste offset that puts the face centre nearest to ``center``
    ox = round(center[0] - (face_in_patch[0] + face_in_patch[2]) / 2)
    oy = round(center[1] - (face_in_patch[1] + face_in_patch[3]) / 2)
    # feathered rectangle: a hard photo edge would look like a second, sharp "object"
    feather = max(int(0.06 * min(new_w, new_h)), 1)
    mask = np.zeros((new_h, new_w), np.float32)
    mask[feather:-feather, feather:-feather] = 1
    mask = cv2.GaussianBlur(mask, (0, 0), feather / 2)[..., None]
    wh, ww = world.shape[:2]
    x0, y0 = max(ox, 0), max(oy, 0)
    x1, y1 = min(ox + new_w, ww), min(oy + new_h, wh)
    region = world[y0:y1, x0:x1].astype(np.float32)
    p = patch[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    m = mask[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    world[y0:y1, x0:x1] = (region * (1 - m) + p * m).round().clip(0, 255).astype(np.uint8)
    return (face_in_patch + np.array([ox, oy, ox, oy])).astype(np.float64)


@dataclass(frozen=True)
class _Shot:
    """One shot: its pre-rendered world canvas, the face box in it, and the camera's path."""

    world: np.ndarray
    face: np.ndarray  # xyxy in world pixels
    zoom: tuple[float, float]  # at the shot's first and last frame
    pan: tuple[float, float, float]  # view-centre sweep in x (fraction of width), bob in y, direction


def _camera(shot: _Shot, u: float, width: int, height: int) -> tuple[float, float, float]:
    """Zoom and view origin (world pixels) at shot progress ``u`` in [0, 1].

    A smooth path (cosine ease for the pan, sine bob, linear zoom) so trackers see realistic,
    continuous motion; returns ``(z, ox, oy)`` with output = z * (world - origin).
    """
    z = shot.zoom[0] + (shot.zoom[1] - shot.zoom[0]) * u
    wh, ww = shot.world.shape[:2]
    sweep, bob, direction = shot.pan
    ease = (1 - math.cos(math.pi * u)) / 2  # 0 -> 1, zero speed at the ends
    cx = ww / 2 + direction * sweep * width * (2 * ease - 1)
    cy = wh / 2 + bob * height * math.sin(2 * math.pi * u)
    return z, cx - width / (2 * z), cy - height / (2 * z)


def _render(shot: _Shot, u: float, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """One output frame (RGB) and its face box: the world seen through the moving camera."""
    z, ox, oy = _camera(shot, u, width, height)
    # edge coordinates map as x_out = z * (x_world - ox); warpAffine works on pixel centres
    matrix = np.array([[z, 0, z * (0.5 - ox) - 0.5], [0, z, z * (0.5 - oy) - 0.5]], np.float64)
    frame = cv2.warpAffine(shot.world, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
    box = z * (shot.face - np.array([ox, oy, ox, oy]))
    box = np.clip(box, 0, [width, height, width, height]).astype(np.float32)
    return frame, box


def _frame_durations(frames: int, vfr: bool) -> list[int]:
    """Frame durations in time-base ticks: 1 for CFR; for VFR, 100 ticks = one nominal interval.

    The VFR pattern alternates 1x and 2x intervals with a few odd ones (0.5x, 1.37x, 0.73x), so
    any code that assumes a constant frame rate, or rounds timestamps to frame numbers, breaks.
    """
    if not vfr:
        return [1] * frames
    durations = []
    for i in range(frames):
        if i % 11 == 5:
            durations.append(137)
        elif i % 13 == 8:
            durations.append(50)
        elif i % 17 == 3:
            durations.append(73)
        else:
            durations.append(100 if i % 2 == 0 else 200)
    return durations


def _rescale(value: int, src: Fraction, dst: Fraction) -> int:
    """Non-negative ``value`` from time base ``src`` to ``dst``, rounding half up like FFmpeg's av_rescale_q.

    The muxer may store the stream in another time base (MP4: a multiple of 10000 or more ticks per
    second; Matroska: milliseconds); the truth must hold the pts the file really has.
    """
    return math.floor(value * src / dst + Fraction(1, 2))


def _open_video_stream(
    container: av.container.OutputContainer, codec: str, width: int, height: int, fps: int, time_base: Fraction
) -> av.VideoStream:
    """Add the video stream: yuv420p where the encoder has it, CRF 18 and fixed threads for x264."""
    try:
        info = av.codec.Codec(codec, "w")
    except (av.FFmpegError, ValueError) as exc:
        raise ValueError(f"codec {codec!r} is not an available FFmpeg encoder") from exc
    if info.type != "video":
        raise ValueError(f"codec {codec!r} is not a video encoder")
    formats = [f.name for f in (info.video_formats or [])]
    stream = container.add_stream(codec, rate=fps)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p" if not formats or "yuv420p" in formats else formats[0]
    stream.time_base = time_base
    stream.codec_context.time_base = time_base
    if codec == "libx264":
        stream.options = {"crf": "18", "threads": X264_THREADS}
        # frame threads (PyAV's default is slice threads) give the one-slice pictures cameras write
        stream.codec_context.thread_type = "FRAME"
    return stream


class _Tone:
    """A stereo 440 Hz AAC tone, written in 1024-sample fltp frames as the video advances.

    Audio is muxed alongside the video rather than after it, so the file is interleaved like a
    camera's and long clips do not exceed the muxer's interleaving window.
    """

    def __init__(self, container: av.container.OutputContainer, stream: av.AudioStream, total: int) -> None:
        self.container, self.stream, self.total, self.next = container, stream, total, 0

    def write_until(self, seconds: Fraction) -> None:
        """Encode every frame that starts before ``seconds`` (and before the tone's end)."""
        limit = min(math.ceil(seconds * AUDIO_RATE), self.total)
        while self.next < limit:
            n = np.arange(self.next, self.next + AUDIO_FRAME)
            tone = (TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * n / AUDIO_RATE)).astype(np.float32)
            tone[n >= self.total] = 0  # the last frame is padded with silence, not more tone
            frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            frame.sample_rate = AUDIO_RATE
            frame.pts = self.next
            frame.time_base = Fraction(1, AUDIO_RATE)
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
            self.next += AUDIO_FRAME

    def finish(self) -> None:
        """Encode the rest of the tone and flush the encoder."""
        self.write_until(Fraction(self.total, AUDIO_RATE))
        for packet in self.stream.encode(None):
            self.container.mux(packet)


def make_sample_clip(
    path: str | Path,
    *,
    width: int = 640,
    height: int = 360,
    frames: int = 60,
    fps: int = 25,
    cut_frame: int = 30,
    vfr: bool = False,
    audio: bool = True,
    codec: str = "libx264",
    seed: int = 0,
) -> SampleTruth:
    """Write a two-shot sample clip to ``path`` and return its ground truth.

    Shot 1 (frames ``[0, cut_frame)``) shows Grace Hopper on a warm background, shot 2 the
    astronaut on a cool one, each under a panning, slightly zooming camera; the face is about a
    third of the frame height. ``cut_frame == frames`` writes a single shot. ``vfr`` writes
    irregular frame durations in a 1/(fps*100) time base. The container follows the file
    extension. Raises ``ValueError`` for impossible arguments (odd sizes: yuv420p needs even
    ones) and ``InputError`` when the photo packages are not installed.
    """
    if width < 16 or height < 16 or width % 2 or height % 2:
        raise ValueError(f"width and height must be even and at least 16 (yuv420p), got {width}x{height}")
    if frames < 1 or fps < 1:
        raise ValueError(f"frames and fps must be positive, got frames={frames}, fps={fps}")
    if not 0 < cut_frame <= frames:
        raise ValueError(f"cut_frame must be in 1..frames ({frames}), got {cut_frame}")
    specs = (GRACE_HOPPER, ASTRONAUT) if cut_frame < frames else (GRACE_HOPPER,)
    sources = tuple(photo_path(s) for s in specs)
    photos = [load_photo(p) for p in sources]

    rng = np.random.default_rng(seed)
    ww, wh = round(width * WORLD_MARGIN), round(height * WORLD_MARGIN)
    face_h = FACE_FRACTION * min(width, height)
    looks = (
        # warm background, camera pans right to left while zooming in
        (((190, 120, 60), (110, 60, 40), (240, 200, 120)), (1.0, 1.08), (0.07, 0.03, -1.0), (-0.04, 0.0)),
        # cool background, camera pans left to right while zooming out
        (((40, 110, 150), (30, 150, 90), (150, 220, 240)), (1.1, 1.0), (0.08, 0.025, 1.0), (0.05, 0.02)),
    )
    shots = []
    for photo, spec, (colors, zoom, pan, offset) in zip(photos, specs, looks, strict=False):
        world = _background(ww, wh, colors, rng)
        center = (ww / 2 + offset[0] * width, wh / 2 + offset[1] * height)
        face = _paste_photo(world, photo, spec, face_h, center)
        shots.append(_Shot(world, face, zoom, pan))

    time_base = Fraction(1, fps * 100) if vfr else Fraction(1, fps)
    durations = _frame_durations(frames, vfr)
    pts = [sum(durations[:i]) for i in range(frames)]
    ranges = [(0, cut_frame), (cut_frame, frames)]

    faces: list[tuple[np.ndarray, ...]] = []
    # bitexact: no random container UIDs (Matroska) or version strings, so equal arguments give equal bytes
    with av.open(str(path), "w", options={"fflags": "+bitexact"}) as container:
        video = _open_video_stream(container, codec, width, height, fps, time_base)
        tone = None
        if audio:
            audio_stream = container.add_stream("aac", rate=AUDIO_RATE)
            audio_stream.layout = "stereo"
            audio_stream.format = "fltp"
            tone = _Tone(container, audio_stream, math.ceil((pts[-1] + durations[-1]) * time_base * AUDIO_RATE))
        for shot, (start, end) in zip(shots, ranges, strict=False):
            for i in range(start, end):
                u = (i - start) / max(end - start - 1, 1)
                rgb, box = _render(shot, u, width, height)
                faces.append((box,))
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                frame.pts = pts[i]
                frame.time_base = time_base
                for packet in video.encode(frame):
                    container.mux(packet)
                if tone is not None:
                    tone.write_until((pts[i] + durations[i]) * time_base)
        for packet in video.encode(None):
            container.mux(packet)
        if tone is not None:
            tone.finish()
        written_tb = video.time_base or time_base

    return SampleTruth(
        width=width,
        height=height,
        frame_count=frames,
        cut_frame=cut_frame,
        time_base=Fraction(written_tb),
        pts=tuple(_rescale(p, time_base, Fraction(written_tb)) for p in pts),
        faces=tuple(faces),
        sources=tuple(str(p) for p in sources),
    )


def main(argv: list[str] | None = None) -> int:
    """Write the default demo clip (640x360, 4 s at 25 fps, cut at 2 s, with audio); print its path."""
    parser = argparse.ArgumentParser(prog="python -m deid_edit.sample", description=main.__doc__)
    parser.add_argument("output", type=Path, help="video file to write, e.g. sample.mp4")
    parser.add_argument("--vfr", action="store_true", help="irregular frame durations")
    parser.add_argument("--seed", type=int, default=0, help="background pattern seed")
    args = parser.parse_args(argv)
    make_sample_clip(args.output, frames=100, fps=25, cut_frame=50, vfr=args.vfr, seed=args.seed)
    print(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
