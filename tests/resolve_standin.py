"""An in-memory STAND-IN for DaVinci Resolve's scripting object graph (not Resolve, not a client of it).

Resolve cannot run in tests, so ``tests/test_davinci_script.py`` drives the Resolve script against these
classes: Resolve -> ProjectManager -> Project -> MediaPool / Folder / MediaPoolItem, Timeline,
TimelineItem, markers. Each class names the README class it stands in for (``API_CLASS``) and
implements only methods that the Resolve 21.0.2 scripting README documents for that class, and only
those the script calls; a test checks both against the README text. Every API call is recorded in
``StandInResolve.calls`` as ``(API_CLASS, method, args)``.

Behaviour the stand-in models, as the README documents it or (marked "assumed") as Resolve 19-21 is
reported to behave: record frames are absolute timeline frames; GetEnd() and GetSourceEndFrame() are
exclusive; AppendToTimeline's clipInfo "endFrame" is exclusive (assumed); a clip whose frame rate
differs from the timeline's keeps its real-time length on the timeline (assumed); appending into a
missing track, a locked track or over another item is refused with an empty list (assumed; the README
does not say what Resolve does). Lower-case methods (``add_clip``, ``lock``) are test set-up helpers,
not API.
"""

from __future__ import annotations

import functools
import os

CLIP_INFO_KEYS = {"mediaPoolItem", "startFrame", "endFrame", "mediaType", "trackIndex", "recordFrame"}


def _api_methods(cls):
    """Record every CamelCase method call on instances of ``cls`` in the shared call log."""
    for name, fn in list(vars(cls).items()):
        if callable(fn) and name[:1].isupper():

            def wrap(fn=fn, name=name):
                @functools.wraps(fn)
                def recorded(self, *args):
                    self.calls.append((cls.API_CLASS, name, args))
                    return fn(self, *args)

                return recorded

            setattr(cls, name, wrap())
    return cls


class _StandIn:
    API_CLASS = ""

    def __init__(self, calls: list):
        self.calls = calls


@_api_methods
class StandInFolder(_StandIn):
    API_CLASS = "Folder"

    def __init__(self, calls, name):
        super().__init__(calls)
        self.name = name
        self.subfolders: list[StandInFolder] = []
        self.clips: list[StandInMediaPoolItem] = []

    def GetName(self):
        return self.name

    def GetSubFolderList(self):
        return list(self.subfolders)

    def GetClipList(self):
        return list(self.clips)


@_api_methods
class StandInMediaPoolItem(_StandIn):
    API_CLASS = "MediaPoolItem"

    def __init__(self, calls, path, fps):
        super().__init__(calls)
        self.path = path
        self.fps = fps

    def GetName(self):
        return os.path.basename(self.path)

    def GetClipProperty(self, name=None):
        props = {"File Path": self.path, "FPS": self.fps, "Clip Name": os.path.basename(self.path)}
        return props if name is None else props.get(name, "")


@_api_methods
class StandInTimelineItem(_StandIn):
    API_CLASS = "TimelineItem"

    def __init__(self, calls, media_pool_item, track, source_start, source_end, record_start, record_end, color=""):
        super().__init__(calls)
        self.media_pool_item = media_pool_item
        self.track = track
        self.source_start, self.source_end = source_start, source_end
        self.record_start, self.record_end = record_start, record_end
        self.color = color
        self.markers: dict[float, dict] = {}

    def GetName(self):
        return self.media_pool_item.GetName() if self.media_pool_item else "Title"

    def GetStart(self, subframe_precision=False):
        return self.record_start

    def GetEnd(self, subframe_precision=False):
        return self.record_end

    def GetDuration(self, subframe_precision=False):
        return self.record_end - self.record_start

    def GetSourceStartFrame(self):
        return self.source_start

    def GetSourceEndFrame(self):
        return self.source_end

    def GetMediaPoolItem(self):
        return self.media_pool_item

    def GetTrackTypeAndIndex(self):
        return ["video", self.track]

    def GetClipColor(self):
        return self.color

    def AddMarker(self, frame_id, color, name, note, duration, custom_data=""):
        """frameId is an offset within the clip ("marker at clip offset 96"); one marker per frame."""
        if not 0 <= frame_id < self.record_end - self.record_start or float(frame_id) in self.markers:
            return False
        self.markers[float(frame_id)] = {"color": color, "duration": float(duration), "note": note, "name": name, "customData": custom_data}
        return True

    def GetMarkers(self):
        return dict(self.markers)


@_api_methods
class StandInTimeline(_StandIn):
    API_CLASS = "Timeline"

    def __init__(self, calls, name="Timeline 1", fps=25.0, start_frame=90000, video_tracks=1):
        super().__init__(calls)
        self.name, self.fps, self.start_frame = name, fps, start_frame
        self.tracks: list[list[StandInTimelineItem]] = [[] for _ in range(video_tracks)]
        self.locked: set[int] = set()
        self.playhead = start_frame
        self.markers: dict[float, dict] = {}

    # -- set-up helpers (not API)
    def add_clip(self, track, media_pool_item, source_start, source_end, record_start, color=""):
        """Put an item on video ``track`` the way an editor would: real-time length across frame rates."""
        while len(self.tracks) < track:
            self.tracks.append([])
        duration = self._record_length(media_pool_item, source_start, source_end)
        record_end = record_start + duration
        item = StandInTimelineItem(self.calls, media_pool_item, track, source_start, source_end, record_start, record_end, color)
        self.tracks[track - 1].append(item)
        self.tracks[track - 1].sort(key=lambda it: it.record_start)
        return item

    def lock(self, track):
        self.locked.add(track)

    def _record_length(self, media_pool_item, source_start, source_end):
        fps = media_pool_item.fps if media_pool_item else self.fps
        return round((source_end - source_start) * self.fps / fps)

    def _append(self, info):
        """One clipInfo of MediaPool.AppendToTimeline; None when Resolve (assumed) would refuse it."""
        assert set(info) <= CLIP_INFO_KEYS, f"undocumented clipInfo keys {set(info) - CLIP_INFO_KEYS}"
        track, record = info["trackIndex"], info["recordFrame"]
        if not 1 <= track <= len(self.tracks) or track in self.locked or info["endFrame"] <= info["startFrame"]:
            return None
        end = record + self._record_length(info["mediaPoolItem"], info["startFrame"], info["endFrame"])
        if any(it.record_start < end and record < it.record_end for it in self.tracks[track - 1]):
            return None
        return self.add_clip(track, info["mediaPoolItem"], info["startFrame"], info["endFrame"], record)

    # -- API
    def GetName(self):
        return self.name

    def GetStartFrame(self):
        return self.start_frame

    def GetTrackCount(self, track_type):
        return len(self.tracks) if track_type == "video" else 0

    def AddTrack(self, track_type, sub_track_type=None):
        """Without an index the new track is appended on top (README: "'index' if skipped ... appends track")."""
        if track_type != "video":
            return False
        self.tracks.append([])
        return True

    def GetItemListInTrack(self, track_type, index):
        if track_type != "video" or not 1 <= index <= len(self.tracks):
            return []
        return list(self.tracks[index - 1])

    def GetIsTrackLocked(self, track_type, index):
        return index in self.locked

    def GetCurrentVideoItem(self):
        """The topmost video item under the playhead."""
        for items in reversed(self.tracks):
            for it in items:
                if it.record_start <= self.playhead < it.record_end:
                    return it
        return None

    def AddMarker(self, frame_id, color, name, note, duration, custom_data=""):
        if float(frame_id) in self.markers:
            return False
        self.markers[float(frame_id)] = {"color": color, "duration": float(duration), "note": note, "name": name, "customData": custom_data}
        return True


@_api_methods
class StandInMediaPool(_StandIn):
    API_CLASS = "MediaPool"

    def __init__(self, calls, project, import_fps=None):
        super().__init__(calls)
        self.project = project
        self.root = StandInFolder(calls, "Master")
        self.current = self.root
        self.import_fps = import_fps
        self.appended: list[dict] = []  # every clipInfo Resolve accepted

    def GetRootFolder(self):
        return self.root

    def AddSubFolder(self, folder, name):
        sub = StandInFolder(self.calls, name)
        folder.subfolders.append(sub)
        return sub

    def GetCurrentFolder(self):
        return self.current

    def SetCurrentFolder(self, folder):
        self.current = folder
        return True

    def ImportMedia(self, paths):
        """Imports into the current folder; a path that is not a file yields no item."""
        fps = self.import_fps or self.project.timeline.fps
        items = [StandInMediaPoolItem(self.calls, p, fps) for p in paths if os.path.isfile(p)]
        self.current.clips.extend(items)
        return items

    def AppendToTimeline(self, clip_infos):
        """Appends into the current timeline; returns only the TimelineItems it could place."""
        appended = []
        for info in clip_infos:
            item = self.project.timeline._append(info)
            if item is not None:
                appended.append(item)
                self.appended.append(dict(info))
        return appended


@_api_methods
class StandInProject(_StandIn):
    API_CLASS = "Project"

    def __init__(self, calls, timeline_kwargs=None, import_fps=None):
        super().__init__(calls)
        self.timeline = StandInTimeline(calls, **(timeline_kwargs or {}))
        self.media_pool = StandInMediaPool(calls, self, import_fps)

    def GetMediaPool(self):
        return self.media_pool

    def GetCurrentTimeline(self):
        return self.timeline


@_api_methods
class StandInProjectManager(_StandIn):
    API_CLASS = "ProjectManager"

    def __init__(self, calls, project):
        super().__init__(calls)
        self.project = project

    def GetCurrentProject(self):
        return self.project


@_api_methods
class StandInResolve(_StandIn):
    API_CLASS = "Resolve"

    def __init__(self, timeline_kwargs=None, import_fps=None):
        super().__init__([])
        self.project = StandInProject(self.calls, timeline_kwargs, import_fps)
        self.project_manager = StandInProjectManager(self.calls, self.project)

    def GetProjectManager(self):
        return self.project_manager

    # -- shortcuts for tests (not API)
    @property
    def timeline(self) -> StandInTimeline:
        return self.project.timeline

    @property
    def media_pool(self) -> StandInMediaPool:
        return self.project.media_pool

    def media(self, path, fps=None):
        """A MediaPoolItem for ``path`` in the root bin, as if the editor had imported it."""
        item = StandInMediaPoolItem(self.calls, str(path), fps or self.timeline.fps)
        self.media_pool.root.clips.append(item)
        return item


STAND_IN_CLASSES = (
    StandInResolve,
    StandInProjectManager,
    StandInProject,
    StandInMediaPool,
    StandInFolder,
    StandInMediaPoolItem,
    StandInTimeline,
    StandInTimelineItem,
)
