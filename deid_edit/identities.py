"""Identities: tracks in, ``Identity`` records out (next: plan).

For now every track is its own identity, anonymized, ids in order of first appearance. Linking the
same person across cuts and choosing who is kept come with face embeddings (see the issue
"Who is who").
"""

from __future__ import annotations

from collections.abc import Sequence

from .types import Identity, Track


def identities_from_tracks(tracks: Sequence[Track]) -> list[Identity]:
    """One anonymized identity per track, numbered by first appearance."""
    ordered = sorted(tracks, key=lambda t: (t.start, t.track_id))
    return [Identity(i, (t.track_id,), "anonymize", f"person {i}") for i, t in enumerate(ordered)]
