"""Option dataclasses, one per stage: the only home of defaults.

The CLI builds these from the flags a user set (unset flags are ``None`` and fall back to the
defaults here); each validates itself on creation and raises ``ConfigError`` naming the flag, the
value and what is allowed, so the core never runs with an impossible setting.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ConfigError

# --mode names; render.ANONYMIZERS maps each to its class and checks at import that the two agree.
# Named here so RenderConfig validates a mode without importing render (which imports this module).
MODES = ("blur", "pixelate", "solid", "matte", "debug", "cloak")
SHAPES = ("ellipse", "box")
MAX_BLOCKS = 10  # pixelate: the finest mosaic that no recognizer matched on footage (RenderConfig.blocks)
DEVICES_GENERIC = ("auto", "cpu", "cuda", "mps", "tensorrt", "coreml", "directml")
BACKENDS = ("auto", "onnxruntime", "torch")  # deid_edit.backend; auto: see its docstring
ORT_ONLY_DEVICES = ("tensorrt", "coreml", "directml")


# Every command-line flag (by its click parameter name) and the stage setting it sets, as
# (section, field). One flag, one stage, unless the table says otherwise and why; a flag missing
# here reaches no stage (``route`` refuses it), and a setting missing here has no flag (its errors
# name it as a setting of the Python API).
FLAGS: dict[str, tuple[tuple[str, str], ...]] = {
    # detect
    "threshold": (("detect", "threshold"),),
    "min_face": (("detect", "min_face"),),
    "max_side": (("detect", "max_side"),),  # --det-size
    "batch_size": (("detect", "batch_size"),),
    "coarse_every": (("detect", "coarse_every"),),
    "threads": (("detect", "threads"),),
    # two stages: the cloak's networks run where the detector runs (one choice of hardware per run)
    "device": (("detect", "device"), ("render", "device")),
    "backend": (("detect", "backend"), ("render", "backend")),
    # shots, track, identity
    "cut_list": (("shots", "cut_list"),),  # --shots-from
    "weak_hits": (("track", "weak_hits"),),
    "recognizer": (("identity", "recognizer"),),
    # render
    "mode": (("render", "mode"),),
    "shape": (("render", "shape"),),
    "region": (("render", "region"),),
    "padding": (("render", "padding"),),
    "feather": (("render", "feather"),),
    "color": (("render", "color"),),
    "blocks": (("render", "blocks"),),
    "strength": (("render", "strength"),),
    # encode
    "codec": (("encode", "codec"),),
    "crf": (("encode", "crf"),),
    "preset": (("encode", "preset"),),
    "force": (("encode", "force"),),
    "keep_metadata": (("encode", "keep_metadata"),),
}
# streaming run: seconds a frame may wait for the end of its shot; longer than every hold of the
# track ends (hold_cut, bridge, hold_edge: 1 s at most)
DEFAULT_LOOKAHEAD = 5.0
# flags whose click name is not the field's name
FLAG_SPELLING = {"max_side": "--det-size", "cut_list": "--shots-from"}


def flag_for(section: str, name: str) -> str:
    """How a user sets ``section.name``: its flag, or the dataclass field for settings without one."""
    for flag, targets in FLAGS.items():
        if (section, name) in targets:
            return FLAG_SPELLING.get(flag, "--" + flag.replace("_", "-"))
    return f"{section}.{name} (Python API setting)"


def route(values: dict[str, Any], section: str) -> dict[str, Any]:
    """The settings of one stage from the flags a user set (``None``: not set, the default applies).

    A name that is no flag of any stage is a programming error (a new flag missing from ``FLAGS``)
    and raises, so no flag can silently reach nothing or the wrong stage.
    """
    unknown = sorted(k for k, v in values.items() if v is not None and k not in FLAGS)
    if unknown:
        raise TypeError(f"options {unknown} are not in config.FLAGS; add them there with the stage they set")
    return {
        field: values[flag] for flag, targets in FLAGS.items() for sec, field in targets if sec == section and values.get(flag) is not None
    }


def _check(ok: bool, section: str, name: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{flag_for(section, name)} {value!r} is not allowed: use {allowed}")


def _check_device_backend(section: str, device: str, backend: str) -> None:
    """``--device`` and ``--backend`` each known, and a pair that can work (``backend.resolve_backend``)."""
    base = device.split(":")[0]
    _check(base in DEVICES_GENERIC, section, "device", device, ", ".join(DEVICES_GENERIC) + " (cuda:N allowed)")
    _check(backend in BACKENDS, section, "backend", backend, ", ".join(BACKENDS))
    if backend == "onnxruntime":
        _check(base != "mps", section, "device", device, "a device ONNX Runtime has (mps needs --backend torch)")
    if backend == "torch":
        _check(base not in ORT_ONLY_DEVICES, section, "device", device, "auto, cpu, cuda[:N] or mps with --backend torch")


@dataclass(frozen=True)
class DetectConfig:
    """Face detection: model, threshold, the smallest face to find, batching and device."""

    model: str = "centerface"
    threshold: float = 0.3
    min_face: int = 36  # pixels (short side of the face box) in the source frame
    max_side: int = 960  # detection input long side when min_face allows shrinking
    batch_size: int = 0  # frames per inference; 0 = 2 on the CPU (larger is slower there), 16 on a GPU
    device: str = "auto"
    threads: int = 0  # ONNX Runtime intra-op threads; 0: all cores, half of them while a run also encodes
    sweep_every: int = 3  # in busy scenes, also detect at full resolution every N frames (0 = never)
    # in quiet scenes, detect at half the scale except every N-th frame; 0 = never, -1 = automatic:
    # 5 on the CPU, never on a GPU (detection is not the bottleneck there, and it would cut batches)
    coarse_every: int = -1
    backend: str = "auto"  # inference engine: onnxruntime, torch (extra deid-edit[torch]) or auto

    def __post_init__(self) -> None:
        _check(0.01 <= self.threshold <= 0.99, "detect", "threshold", self.threshold, "a number in 0.01..0.99")
        _check(8 <= self.min_face <= 4096, "detect", "min_face", self.min_face, "pixels in 8..4096")
        _check(128 <= self.max_side <= 8192, "detect", "max_side", self.max_side, "pixels in 128..8192")
        _check(0 <= self.batch_size <= 256, "detect", "batch_size", self.batch_size, "1..256, or 0 for automatic")
        _check(self.threads >= 0, "detect", "threads", self.threads, "0 (all cores) or more")
        _check(self.coarse_every >= -1, "detect", "coarse_every", self.coarse_every, "-1 (automatic), 0 (never) or more frames")
        _check_device_backend("detect", self.device, self.backend)

    def detection_scale(self, width: int, height: int) -> float:
        """Scale factor from source to detector input.

        CenterFace finds faces down to about 18 px reliably; shrink the frame as long as a face of
        ``min_face`` pixels stays above that, never below ``max_side`` on the long side, never up.
        """
        keep_small_faces = 18.0 / self.min_face
        fit = self.max_side / max(width, height)
        return float(min(1.0, max(keep_small_faces, fit)))


@dataclass(frozen=True)
class ShotConfig:
    """Shot-cut detection with PySceneDetect's adaptive detector."""

    enabled: bool = True
    cut_list: str | None = None  # an editor's EDL/OTIO/CSV; replaces detection
    adaptive_threshold: float = 3.0
    min_content: float = 30.0  # content score a cut needs: footage max on non-cuts 27.7, min on real cuts 47.9
    fade_threshold: float = 8.0  # mean pixel level under which a frame counts as black (fades)
    min_shot_len: int = 8  # frames

    def __post_init__(self) -> None:
        _check(self.adaptive_threshold > 0, "shots", "adaptive_threshold", self.adaptive_threshold, "a positive number")
        _check(self.min_shot_len >= 1, "shots", "min_shot_len", self.min_shot_len, "1 frame or more")


@dataclass(frozen=True)
class TrackConfig:
    """Tracking, gap filling and temporal extension inside one shot."""

    iou_match: float = 0.2
    max_gap: int = 15  # frames a track may miss before it ends
    extend: int = 4  # frames a track is extended before its first and after its last detection
    min_hits: int = 1  # detections needed to keep a track...
    confirm_score: float = 0.5  # ...unless a single detection is at least this confident
    continue_factor: float = 0.5  # a confident track continues with detections down to this x --threshold
    weak_factor: float = 1 / 3  # a weak track (never confident) is made of detections down to this x --threshold...
    weak_hits: int = 8  # ...and kept once it has this many of them (0: low scores never start a track)
    smooth_sigma: float = 2.0  # frames; Gaussian weight of the bidirectional smoother
    gap_margin: float = 0.04  # extra relative padding per frame away from an observation
    max_margin: float = 0.5
    # where a track ends, a face is often still there (smooth.plan_ends): seconds that a lost face
    # stays covered up to the cut, until the next track at its place picks it up, or while its
    # motion-predicted box is still inside the frame
    hold_cut: float = 0.5
    bridge: float = 1.0
    hold_edge: float = 1.0

    def __post_init__(self) -> None:
        _check(0.0 < self.iou_match < 1.0, "track", "iou_match", self.iou_match, "a number in 0..1")
        _check(self.max_gap >= 0, "track", "max_gap", self.max_gap, "0 or more frames")
        _check(self.extend >= 0, "track", "extend", self.extend, "0 or more frames")
        _check(self.weak_hits >= 0, "track", "weak_hits", self.weak_hits, "0 (off) or more detections")
        for name in ("hold_cut", "bridge", "hold_edge"):
            _check(0.0 <= getattr(self, name) <= 10.0, "track", name, getattr(self, name), "seconds in 0..10")
        ok = 0.0 < self.weak_factor <= self.continue_factor <= 1.0
        _check(ok, "track", "weak_factor", self.weak_factor, "a factor in 0..continue_factor")

    @property
    def detect_factor(self) -> float:
        """The lowest detection score the tracker uses, as a factor of --threshold."""
        return self.weak_factor if self.weak_hits else self.continue_factor


@dataclass(frozen=True)
class IdentityConfig:
    """Face descriptors, linking tracks into people, and matching reference photos."""

    enabled: bool = True
    every: int = 3  # embed sampled detections every N frames
    # pixels (short side); smaller faces are not identifiable, so never linked nor kept. Its own
    # name: --min-face (what the detector looks for) once reached it, and --min-face 16 let 16-px
    # faces be matched and kept.
    min_identity_face: int = 32
    min_frontality: float = 0.2  # identities.frontality: 0 = profile; turned-away faces give unreliable descriptors
    min_contrast: float = 10.0  # grey-level std of the chip's eyes-to-mouth area; below it a face is too dark/flat to identify
    min_samples: int = 2  # descriptors needed before a track counts as identifiable
    max_samples: int = 8  # best samples averaged per track
    link_threshold: float = 0.55  # L2 between track descriptors to call them one person
    linkage: str = "complete"  # identities.LINKAGES: complete never chains look-alikes into one person
    keep_threshold: float = 0.5  # --keep: stricter than linking (a wrong keep exposes someone)
    only_threshold: float = 0.65  # --only: looser (a wrong match only hides one more face)
    recognizer: str = "fast"  # embed.RECOGNIZERS: fast (int8) or exact (float32, verified against dlib)

    def __post_init__(self) -> None:
        _check(self.every >= 1, "identity", "every", self.every, "1 or more frames")
        _check(0.1 < self.link_threshold < 1.5, "identity", "link_threshold", self.link_threshold, "a distance in 0.1..1.5")
        _check(self.recognizer in ("fast", "exact"), "identity", "recognizer", self.recognizer, "fast or exact")
        _check(
            self.min_identity_face >= 32,
            "identity",
            "min_identity_face",
            self.min_identity_face,
            "32 pixels or more (smaller faces are not identifiable)",
        )
        _check(self.linkage in ("complete", "average"), "identity", "linkage", self.linkage, "complete or average")
        _check(self.keep_threshold <= self.only_threshold, "identity", "keep_threshold", self.keep_threshold, "at most only_threshold")


@dataclass(frozen=True)
class RenderConfig:
    """How regions are drawn: anonymizer, shape, padding, feather, colour; for ``--mode cloak``,
    where its networks run (``device``/``backend`` as DetectConfig's, the same flags)."""

    mode: str = "blur"
    shape: str = "ellipse"
    padding: float = 0.25  # relative to the face box, on each side
    feather: float = 0.15  # relative width of the soft edge (outside the covered area)
    color: tuple[int, int, int] = (0, 0, 0)
    # pixelate: blocks across the (padded) face. A finer mosaic keeps identity: the exact recognizer
    # matched LFW pairs through 16 blocks 8.5% of the time (a solid mask: 0.7%, 8 blocks: 1.0%) and
    # hamilton_stage's faces through 12 blocks 6 times (8 and 10 blocks: never); benchmarks/pixelate.py
    blocks: int = 8
    strength: float = 1.0  # blur: multiplier of the face-relative radius
    device: str = "auto"  # cloak: generator and recognizer device
    backend: str = "auto"  # cloak: inference engine (deid_edit.backend)
    region: str | None = None  # face or head; None: head for the modes that hide faces, face for the cloak

    @property
    def reach(self) -> str:
        """What a region covers: the whole head (hair and ears identify people too) unless asked
        otherwise; the cloak replaces a face, so it keeps to the face."""
        if self.region is not None:
            return self.region
        return "face" if self.mode == "cloak" else "head"

    def __post_init__(self) -> None:
        _check(self.mode in MODES, "render", "mode", self.mode, ", ".join(sorted(MODES)))
        _check(self.shape in SHAPES, "render", "shape", self.shape, " or ".join(SHAPES))
        _check(0.0 <= self.padding <= 2.0, "render", "padding", self.padding, "a number in 0..2 (fraction of the face size)")
        _check(0.0 <= self.feather <= 1.0, "render", "feather", self.feather, "a number in 0..1")
        _check(len(self.color) == 3 and all(0 <= c <= 255 for c in self.color), "render", "color", self.color, "R,G,B in 0..255")
        _check(2 <= self.blocks <= MAX_BLOCKS, "render", "blocks", self.blocks, f"2..{MAX_BLOCKS} (a finer mosaic can still be recognized)")
        _check(self.region in (None, "face", "head"), "render", "region", self.region, "face or head")
        _check(0.5 <= self.strength <= 4.0, "render", "strength", self.strength, "0.5..4")
        _check_device_backend("render", self.device, self.backend)


@dataclass(frozen=True)
class EncodeConfig:
    """Output video codec settings, and what else of the source the output carries.

    Audio is always copied; by default nothing that could locate or identify the source
    (``io.metadata``); ``keep_metadata`` copies every tag, subtitle, data stream, chapter and
    attachment the output container accepts."""

    codec: str | None = None  # None: the input's codec when encodable, else H.264
    crf: int | None = None
    preset: str | None = None
    force: bool = False
    keep_metadata: bool = False

    def __post_init__(self) -> None:
        if self.crf is not None:
            _check(0 <= self.crf <= 63, "encode", "crf", self.crf, "0..63 (lower is better quality)")


@dataclass(frozen=True)
class AnalyzeConfig:
    """Everything the analyze pass needs."""

    detect: DetectConfig = field(default_factory=DetectConfig)
    shots: ShotConfig = field(default_factory=ShotConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_options(cls, **values: Any) -> AnalyzeConfig:
        """Build from command-line flags (``FLAGS``); None means not set."""
        return cls(
            detect=DetectConfig(**route(values, "detect")),
            shots=ShotConfig(**route(values, "shots")),
            track=TrackConfig(**route(values, "track")),
            identity=IdentityConfig(**route(values, "identity")),
        )


def render_config(**values: Any) -> RenderConfig:
    """A RenderConfig from command-line flags (``FLAGS``), None meaning default."""
    return RenderConfig(**route(values, "render"))


def encode_config(**values: Any) -> EncodeConfig:
    """An EncodeConfig from command-line flags (``FLAGS``), None meaning default."""
    return EncodeConfig(**route(values, "encode"))
