"""Who is who: descriptors sampled during analyze (``descriptors``), tracks linked across cuts into
identities (``link``), and the user's choice of people applied per track (``select``)."""

from .descriptors import DescriptorSampler, chip_contrast, frontality, quality
from .link import (
    LINKAGES,
    build_identities,
    descriptor_distances,
    identities_from_tracks,
    link_tracks,
    seen_together,
    stitch_tracks,
)
from .select import (
    PHOTO_FACE_SHARE,
    Selection,
    SelectionReport,
    TrackChoice,
    load_selection,
    photo_face,
    reference_descriptors,
    select,
    split_identities,
)

__all__ = [
    "LINKAGES",
    "PHOTO_FACE_SHARE",
    "DescriptorSampler",
    "Selection",
    "SelectionReport",
    "TrackChoice",
    "build_identities",
    "chip_contrast",
    "descriptor_distances",
    "frontality",
    "identities_from_tracks",
    "link_tracks",
    "load_selection",
    "photo_face",
    "quality",
    "reference_descriptors",
    "seen_together",
    "select",
    "split_identities",
    "stitch_tracks",
]
