"""deid-edit for DaVinci Resolve: anonymize faces in timeline clips and lay the result on the track above.

Input: the clip under the playhead on the current timeline, or every video clip carrying a chosen clip
colour. For each clip the script reads the source file (``MediaPoolItem.GetClipProperty("File Path")``),
runs the ``deid-edit`` CLI on it as a subprocess (Resolve bundles its own Python, so this file never
imports ``deid_edit``), imports the anonymized file into an "Anonymized" bin and appends it to the
first free video track above the original, at the same record frame and with the same source range,
then marks the new clip with the output path. Output: the new timeline items and a summary printed to
the Resolve Console (Workspace > Console).

Output files are named with the mode (``clip.deid-blur.mp4``) and never overwrite an existing file: a
free name (``clip.deid-blur-2.mp4``) is chosen instead, since an earlier result may be used in other
timelines. A clip that is itself an anonymized copy is never anonymized again: the original under it
is used, or it is skipped. A run stops when the stop file appears (``deid_edit_cancel.py`` from the
same Scripts menu creates it; so can anything else) or on Ctrl-C in a terminal: the CLI is
interrupted, removes its partial file, and the remaining clips are left alone.

Written for the Python that Resolve embeds (3.6 or newer): no dataclasses, no walrus, no
``from __future__ import annotations``; types are given in comments. The Resolve calls used here are
all documented in the scripting README shipped with Resolve 21.0.2; the comments next to them say
which documented behaviour is relied on. ``tests/test_davinci_script.py`` checks every call against
that README and runs ``main`` against an in-memory stand-in of the Resolve object graph.
"""

import collections
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

SCRIPT_DIR = os.path.dirname(os.path.abspath(__file__))
CONFIG_FILE_NAME = "deid_edit_anonymize.json"
LOG_PREFIX = "[deid-edit] "
STOP_FILE_NAME = "deid_edit_anonymize.stop"
MARKER_NAME = "deid-edit"  # the marker the script puts on every clip it places
POLL_SECONDS = 0.2  # how often a running CLI is checked against the stop file
STOP_GRACE_SECONDS = 5.0  # after the interrupt, how long the CLI gets to clean up before it is killed

# What the CLI accepts for --mode, minus "debug" (a developer view that leaves faces visible).
MODES = ("blur", "pixelate", "solid", "matte")

# File stems of anonymized outputs: "clip.deid-blur", "clip.deid-blur-2" (also what the Blender add-on writes).
OUTPUT_STEM = re.compile(r"\.deid-(?:blur|pixelate|solid|matte)(?:-\d+)?$")

# Clip colours as Resolve names them in the timeline's clip colour menu (TimelineItem.GetClipColor()).
CLIP_COLORS = (
    "Orange",
    "Apricot",
    "Yellow",
    "Lime",
    "Olive",
    "Green",
    "Teal",
    "Navy",
    "Blue",
    "Purple",
    "Violet",
    "Pink",
    "Tan",
    "Beige",
    "Brown",
    "Chocolate",
)

# Marker colours accepted by AddMarker, from the README's "Analyze Slate Settings" list (MARKER_*).
MARKER_COLORS = (
    "Blue",
    "Cyan",
    "Green",
    "Yellow",
    "Red",
    "Pink",
    "Purple",
    "Fuchsia",
    "Rose",
    "Lavender",
    "Sky",
    "Mint",
    "Lemon",
    "Sand",
    "Cocoa",
    "Cream",
)

DEFAULTS = {
    "cli": "deid-edit",  # program name on PATH, an absolute path, or a list such as ["/path/python", "-m", "deid_edit"]
    "mode": "blur",
    "clip_color": "",  # empty: process the clip under the playhead; a colour name: every clip of that colour
    "output_dir": "",  # empty: write next to each source file
    "name_template": "{stem}.deid-{mode}{ext}",  # fields: {stem} {ext} {mode}; {mode} is required
    "keep": [],  # photos of people NOT to anonymize (--keep)
    "only": [],  # photos of the only people to anonymize (--only)
    "extra_args": [],  # passed to `deid-edit run` as they are, e.g. ["--device", "cuda"]
    "bin": "Anonymized",
    "marker_color": "Green",
    "stop_file": "",  # empty: deid_edit_anonymize.stop in the temporary folder; the run stops when it appears
}

# Environment variables override the JSON file, which overrides DEFAULTS. List values use os.pathsep.
ENV_VARS = {
    "cli": "DEID_EDIT_CLI",
    "mode": "DEID_EDIT_MODE",
    "clip_color": "DEID_EDIT_CLIP_COLOR",
    "output_dir": "DEID_EDIT_OUTPUT_DIR",
    "name_template": "DEID_EDIT_NAME_TEMPLATE",
    "keep": "DEID_EDIT_KEEP",
    "only": "DEID_EDIT_ONLY",
    "bin": "DEID_EDIT_BIN",
    "marker_color": "DEID_EDIT_MARKER_COLOR",
    "stop_file": "DEID_EDIT_STOP_FILE",
}
LIST_KEYS = ("keep", "only", "extra_args")

# Placement inputs and result. Frames follow Resolve's conventions: record frames are absolute
# timeline frames (TimelineItem.GetStart() already includes the timeline's start timecode, and
# AppendToTimeline's recordFrame is absolute too); source frames count in the clip's own frame rate.
# Every end is exclusive: TimelineItem.GetEnd() == GetStart() + GetDuration(), GetSourceEndFrame() is
# one past the last used source frame, and AppendToTimeline's endFrame is an exclusive bound in
# Resolve 19-21 (not stated by the README; see plugins/davinci/README.md).
SourceRange = collections.namedtuple("SourceRange", "start_frame end_frame record_start record_end track_index")
TrackState = collections.namedtuple("TrackState", "index locked spans")  # spans: [(record_start, record_end), ...]
Placement = collections.namedtuple("Placement", "start_frame end_frame record_frame track_index tracks_to_add")
RunResult = collections.namedtuple("RunResult", "ok output message faces kept frames returncode")
ClipResult = collections.namedtuple("ClipResult", "name status message output track_index")  # status: placed skipped failed cancelled


class ConfigError(ValueError):
    """A configuration value the script cannot use; the message names the key and what is allowed."""


class Cancelled(Exception):
    """The user stopped the run (stop file or Ctrl-C); the CLI was interrupted and left no output."""


# --------------------------------------------------------------------------------------------------
# Configuration


def load_config(environ=None, path=None, validate=True):
    """Merge DEFAULTS, the JSON file next to the script and environment variables (in that order).

    A JSON file lets an editor keep settings with the script; environment variables let a facility set
    them per machine or per launch without editing files. ``DEID_EDIT_RESOLVE_CONFIG`` points at
    another JSON file. Returns a plain dict; raises ConfigError on a value the CLI would reject, so the
    problem shows up once instead of once per clip.
    """
    environ = os.environ if environ is None else environ
    if path is None:
        path = environ.get("DEID_EDIT_RESOLVE_CONFIG") or os.path.join(SCRIPT_DIR, CONFIG_FILE_NAME)
    config = dict(DEFAULTS)
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                from_file = json.load(f)
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: not a readable JSON file ({e})") from e
        if not isinstance(from_file, dict):
            raise ConfigError(f"{path}: expected a JSON object of settings")
        unknown = sorted(set(from_file) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(DEFAULTS))}")
        config.update(from_file)
    for key, var in ENV_VARS.items():
        value = environ.get(var)
        if value is None or value == "":
            continue
        config[key] = [p for p in value.split(os.pathsep) if p] if key in LIST_KEYS else value
    return validate_config(config) if validate else config


def validate_config(config):
    """Check values once, before any clip is touched."""
    if config["mode"] not in MODES:
        raise ConfigError(f"mode {config['mode']!r} is not one of {', '.join(MODES)}")
    color = config["clip_color"]
    if color and color not in CLIP_COLORS:
        raise ConfigError(
            f"clip_color {color!r} is not a Resolve clip colour ({', '.join(CLIP_COLORS)}); leave it empty for the clip under the playhead"
        )
    if config["marker_color"] not in MARKER_COLORS:
        raise ConfigError(f"marker_color {config['marker_color']!r} is not one of {', '.join(MARKER_COLORS)}")
    for key in LIST_KEYS:
        if isinstance(config[key], str):
            config[key] = [config[key]]
        if not isinstance(config[key], list):
            raise ConfigError(f"{key} must be a list")
    for photo in config["keep"] + config["only"]:
        if not os.path.isfile(photo):
            raise ConfigError(f"reference photo {photo!r} does not exist")
    try:
        config["name_template"].format(stem="x", ext=".mov", mode="blur")
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(f"name_template {config['name_template']!r} may use only {{stem}}, {{ext}} and {{mode}} ({e})") from e
    if "{mode}" not in config["name_template"]:
        raise ConfigError(
            f"name_template {config['name_template']!r} must contain {{mode}}, so a blur and a solid result never share a name"
        )
    if not isinstance(config["stop_file"], str):
        raise ConfigError("stop_file must be a path (or empty for the default)")
    if not config["bin"]:
        raise ConfigError("bin must name a media pool bin")
    return config


def output_path_for(source, config):
    """The first-choice output path of ``source``: ``output_dir`` (or the source's folder) + template."""
    folder = config["output_dir"] or os.path.dirname(os.path.abspath(source))
    stem, ext = os.path.splitext(os.path.basename(source))
    name = config["name_template"].format(stem=stem, ext=ext, mode=config["mode"])
    return os.path.abspath(os.path.join(folder, name))


def free_output_path(path, taken=(), exists=os.path.exists):
    """``path`` if no file is there and this run has not claimed it, else ``-2``, ``-3``... before the extension.

    The script never overwrites a file (it never passes ``--force``): an earlier result may be used in
    other timelines or projects, which a re-run must not change under them.
    """
    stem, ext = os.path.splitext(path)
    candidate, n = path, 2
    while exists(candidate) or os.path.normcase(candidate) in taken:
        candidate = f"{stem}-{n}{ext}"
        n += 1
    return candidate


def stop_file_path(config):
    """The file whose appearance stops a run: ``stop_file``, else ``deid_edit_anonymize.stop`` in the temp folder."""
    return config.get("stop_file") or os.path.join(tempfile.gettempdir(), STOP_FILE_NAME)


def stop_requested(config):
    return os.path.exists(stop_file_path(config))


def clear_stop(config):
    """Remove the stop file (a leftover would stop the next run at once)."""
    try:
        os.remove(stop_file_path(config))
    except OSError:
        pass


def request_stop(config=None, environ=None):
    """Create the stop file; a running ``main`` interrupts its CLI and stops. Returns the path.

    Reads only where the stop file is: a setting that would make a run refuse to start (a missing
    photo, say) must not keep the user from stopping one.
    """
    if config is None:
        try:
            config = load_config(environ, validate=False)
        except ConfigError:
            environ = os.environ if environ is None else environ
            config = {"stop_file": environ.get(ENV_VARS["stop_file"]) or ""}
    path = stop_file_path(config)
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"stop requested at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    return path


def cli_command(config):
    """The CLI as an argv prefix, resolved against PATH.

    Resolve starts scripts with its own environment, whose PATH often lacks the virtualenv or pipx
    folder holding ``deid-edit``; failing here with the setting to change beats a bare "not found".
    """
    cli = config["cli"]
    argv = list(cli) if isinstance(cli, list) else [cli]
    if not argv or not argv[0]:
        raise ConfigError("cli is empty; set DEID_EDIT_CLI to the deid-edit program")
    found = shutil.which(argv[0])
    if found is None:
        raise ConfigError(f"cannot find the deid-edit CLI {argv[0]!r}; set DEID_EDIT_CLI (or 'cli' in {CONFIG_FILE_NAME}) to its full path")
    return [found] + argv[1:]


# --------------------------------------------------------------------------------------------------
# Placement (pure: no Resolve objects, tested directly)


def overlaps(a_start, a_end, b_start, b_end):
    """Half-open ranges [a_start, a_end) and [b_start, b_end) share a frame."""
    return a_start < b_end and b_start < a_end


def plan_placement(source, tracks):
    """Where the anonymized clip goes: same source range, same record frame, first free track above.

    ``source`` is a SourceRange read from the original TimelineItem; ``tracks`` holds one TrackState per
    existing video track (index 1..N). The anonymized file keeps every frame and timestamp of its
    source, so the original's source frame numbers address the same pictures in it and the clip
    occupies the same record range whatever the clip and timeline frame rates are; nothing here
    converts between rates. A track is free when it is unlocked and no item on it overlaps the record
    range; when none above the original is free, the result asks for tracks to be added on top.
    """
    if source.end_frame <= source.start_frame:
        raise ValueError(f"empty source range {source.start_frame}..{source.end_frame}")
    if source.record_end <= source.record_start:
        raise ValueError(f"empty record range {source.record_start}..{source.record_end}")
    count = len(tracks)
    by_index = {t.index: t for t in tracks}
    target = source.track_index + 1
    while target <= count:
        track = by_index[target]
        busy = any(overlaps(source.record_start, source.record_end, s, e) for s, e in track.spans)
        if not track.locked and not busy:
            break
        target += 1
    return Placement(
        start_frame=source.start_frame,
        end_frame=source.end_frame,
        record_frame=source.record_start,
        track_index=target,
        tracks_to_add=max(0, target - count),
    )


def clip_info(placement, media_pool_item):
    """The AppendToTimeline clipInfo dict (keys as documented for MediaPool.AppendToTimeline)."""
    return {
        "mediaPoolItem": media_pool_item,
        "startFrame": placement.start_frame,
        "endFrame": placement.end_frame,
        "trackIndex": placement.track_index,
        "recordFrame": placement.record_frame,
        # Video only: the original's audio stays where it is, and a second copy of the same audio on
        # the audio tracks would double it. "mediaType" (1 - Video only) is documented as optional.
        "mediaType": 1,
    }


# --------------------------------------------------------------------------------------------------
# Running the CLI


def log(message):
    """Print to the Resolve Console (the script's stdout); flushed so it appears while the CLI runs."""
    print(LOG_PREFIX + message)
    sys.stdout.flush()


def _progress_printer(name):
    """A progress callback that prints each stage at most every 10 %, so the Console stays readable."""
    last = {}

    def report(stage, done, total):
        step = int(10 * done / total) if total else 0
        if last.get(stage) != step:
            last[stage] = step
            log(f"{name}: {stage} {done}/{total}")

    return report


def run_cli(argv_prefix, source, output, config, on_progress=None):
    """Run ``deid-edit run SOURCE -o OUTPUT ... --progress json`` and read its JSON lines.

    The CLI prints one JSON object per line: progress ``{"stage", "done", "total"}``, then
    ``{"stage": "done", "output", "faces", "kept", "frames"}`` or ``{"stage": "error", "message"}``;
    exit codes 0 ok, 1 error, 2 usage/config error, 130 interrupted. Success needs exit code 0, the
    "done" line and the file on disk, so a crash that exits 0 without output is still a failure.
    No ``--force``: the caller picks a free name, and the CLI refuses a file that appeared meanwhile.
    stdout and stderr are read on threads, so the loop here wakes every POLL_SECONDS to check the stop
    file even while the CLI prints nothing; on a stop (or Ctrl-C) the CLI is interrupted (SIGINT, so it
    removes its partial file; killed after STOP_GRACE_SECONDS) and Cancelled is raised.
    """
    argv = list(argv_prefix) + ["run", source, "-o", output, "--mode", config["mode"], "--progress", "json"]
    for photo in config["keep"]:
        argv += ["--keep", photo]
    for photo in config["only"]:
        argv += ["--only", photo]
    argv += [str(a) for a in config["extra_args"]]
    kwargs = {}
    if os.name == "nt":
        kwargs["creationflags"] = 0x08000000  # CREATE_NO_WINDOW: no console window flashing up over Resolve
    else:
        kwargs["start_new_session"] = True  # its own process group: the stop signals the CLI and anything it started
    started = time.time()
    try:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, encoding="utf-8", errors="replace", **kwargs
        )
    except OSError as e:
        return RunResult(False, None, f"could not start {argv[0]}: {e}", None, None, None, None)
    stderr_lines = []
    lines = queue.Queue()
    drain = threading.Thread(target=lambda: stderr_lines.extend(proc.stderr), daemon=True)
    drain.start()

    def pump():
        for raw in proc.stdout:
            lines.put(raw)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen = {"done": None, "error": None}
    try:
        while True:
            try:
                line = lines.get(timeout=POLL_SECONDS)
            except queue.Empty:
                line = ""
            if line is None:
                break
            if line:
                _take_event(line, source, seen, on_progress)
            if stop_requested(config):
                raise Cancelled(f"stopped ({stop_file_path(config)} appeared)")
    except (Cancelled, KeyboardInterrupt) as e:
        code = stop_child(proc)
        if code != 130:  # killed before it could clean up: remove its temporary file
            _remove_partial(output, started)
        if isinstance(e, KeyboardInterrupt):
            raise Cancelled("interrupted (Ctrl-C)") from None
        raise
    returncode = proc.wait()
    drain.join()
    done, error = seen["done"], seen["error"]
    if returncode == 0 and done is not None:
        written = done.get("output") or output
        written = os.path.abspath(written)
        if os.path.isfile(written):
            return RunResult(True, written, "", done.get("faces"), done.get("kept"), done.get("frames"), returncode)
        error = f"the CLI reported success but {written} does not exist"
    if error is None:
        tail = [s.strip() for s in stderr_lines if s.strip()]
        error = tail[-1] if tail else f"deid-edit exited with code {returncode}"
        if returncode == 130:
            error = "interrupted (" + error + ")"
    return RunResult(False, None, error, None, None, None, returncode)


def _take_event(line, source, seen, on_progress):
    """One stdout line of the CLI: remember done/error, log the kept report, pass progress on."""
    try:
        event = json.loads(line)
    except ValueError:
        return  # not a progress line (a library printing to stdout); the contract lines are JSON
    if not isinstance(event, dict):
        return
    stage = event.get("stage")
    if stage == "done":
        seen["done"] = event
    elif stage == "kept":  # --keep/--only: say who stays visible, in Resolve's Console
        for text in event.get("lines") or []:
            log(f"{os.path.basename(source)}: {text}")
        if event.get("sheet"):
            log(f"{os.path.basename(source)}: faces left visible on purpose: {event['sheet']} (check it before publishing)")
    elif stage == "error":
        seen["error"] = event.get("message")
    elif on_progress is not None and "done" in event and "total" in event:
        on_progress(stage, event["done"], event["total"])


def stop_child(proc, grace=None):
    """Interrupt the CLI like Ctrl-C (it then deletes its partial file and exits 130); kill it after ``grace`` s."""
    grace = STOP_GRACE_SECONDS if grace is None else grace
    if proc.poll() is not None:
        return proc.returncode
    try:
        if os.name == "nt":
            proc.terminate()  # no console to send CTRL_BREAK to under Resolve: the partial file is removed below
        else:
            os.killpg(proc.pid, signal.SIGINT)
    except OSError:
        pass
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        try:
            if os.name == "nt":
                proc.kill()
            else:
                os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        return proc.wait()


def _remove_partial(output, since):
    """Delete the CLI's temporary file(s) for ``output`` (``.STEM.*.partEXT`` beside it) written since ``since``."""
    folder = os.path.dirname(output) or "."
    stem, ext = os.path.splitext(os.path.basename(output))
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        path = os.path.join(folder, name)
        if name.startswith(f".{stem}.") and name.endswith(f".part{ext}"):
            try:
                if os.path.getmtime(path) >= since - 1:
                    os.remove(path)
            except OSError:
                pass


# --------------------------------------------------------------------------------------------------
# Resolve


def get_resolve():
    """The Resolve object: the ``resolve`` global Resolve gives menu scripts, else the scripting module.

    Workspace > Scripts runs this file with ``resolve`` (and ``bmd``) already defined; from a terminal
    the documented route is ``DaVinciResolveScript.scriptapp("Resolve")`` with RESOLVE_SCRIPT_API on
    PYTHONPATH.
    """
    for scope in (globals(), getattr(sys.modules.get("__main__"), "__dict__", {})):
        if scope.get("resolve") is not None:
            return scope["resolve"]
        if scope.get("bmd") is not None:
            return scope["bmd"].scriptapp("Resolve")
    try:
        import DaVinciResolveScript as dvr_script
    except ImportError:
        return None
    return dvr_script.scriptapp("Resolve")


def find_target_items(timeline, clip_color):
    """The TimelineItems to process: every video item with ``clip_color``, else the one under the playhead.

    The API has no call for the timeline selection, so the user picks clips by colour or parks the
    playhead. Timeline.GetItemListInTrack("video", i) lists a track's items for 1 <= i <=
    GetTrackCount("video"); Timeline.GetCurrentVideoItem() returns the video item at the playhead.
    Items come back in timeline order (track, then record start).
    """
    if not clip_color:
        item = timeline.GetCurrentVideoItem()
        return [item] if item else []
    found = []
    for index in range(1, int(timeline.GetTrackCount("video")) + 1):
        for item in timeline.GetItemListInTrack("video", index) or []:
            if item.GetClipColor() == clip_color:
                found.append(item)
    return found


def source_path(item):
    """The media file of a TimelineItem ("" for titles, generators and compound clips)."""
    mpi = item.GetMediaPoolItem()
    return (mpi.GetClipProperty("File Path") if mpi else "") or ""


def is_output_item(item):
    """Whether a TimelineItem shows a deid-edit result: it carries the script's marker, or its file is named like one.

    TimelineItem.GetMarkers() returns {frameId: {"color", "duration", "note", "name", "customData"}};
    the script names its marker MARKER_NAME. The file name catches copies whose marker was removed
    and results of the Blender add-on or a plain ``deid-edit run -o clip.deid-blur.mp4``.
    """
    markers = item.GetMarkers() or {}
    if any(isinstance(m, dict) and m.get("name") == MARKER_NAME for m in markers.values()):
        return True
    stem = os.path.splitext(os.path.basename(source_path(item)))[0]
    return bool(OUTPUT_STEM.search(stem))


def find_original_item(timeline, copy):
    """The clip an anonymized ``copy`` covers: on a lower video track, same record range, not itself an output.

    The script places each copy at the original's record frame and length on a track above it, so
    the original is the highest such item below; None when it was moved or deleted.
    """
    _, track_index = copy.GetTrackTypeAndIndex()
    start, end = copy.GetStart(), copy.GetEnd()
    for index in range(int(track_index) - 1, 0, -1):
        for item in timeline.GetItemListInTrack("video", index) or []:
            if item.GetStart() == start and item.GetEnd() == end and source_path(item) and not is_output_item(item):
                return item
    return None


def choose_items(timeline, items):
    """The clips to anonymize: each once, an anonymized copy replaced by the original under it.

    Returns (items, skipped ClipResults). Anonymizing a copy again would only anonymize the
    anonymized picture (``clip.deid-blur.deid-blur.mp4``); a copy whose original is not found under
    it is skipped with that reason.
    """
    chosen, keys, skipped = [], set(), []
    for item in items:
        name = item.GetName()
        if is_output_item(item):
            original = find_original_item(timeline, item)
            if original is None:
                message = "it is an anonymized copy made by deid-edit and its original is not under it; select the original"
                log(f"{name}: skipped, {message}")
                skipped.append(ClipResult(name, "skipped", message, None, None))
                continue
            log(f"{name}: is an anonymized copy; anonymizing its original on V{original.GetTrackTypeAndIndex()[1]} instead")
            item = original
        key = (int(item.GetTrackTypeAndIndex()[1]), item.GetStart())
        if key not in keys:
            keys.add(key)
            chosen.append(item)
    return chosen, skipped


def read_source_range(item):
    """SourceRange of a TimelineItem.

    GetStart()/GetEnd() are record frames on the timeline (absolute, end exclusive);
    GetSourceStartFrame()/GetSourceEndFrame() are "the start/end frame position of the media pool clip
    in the timeline clip", i.e. the used source range including any trimmed head;
    GetTrackTypeAndIndex() gives [trackType, trackIndex].
    """
    track_type, track_index = item.GetTrackTypeAndIndex()
    return SourceRange(
        start_frame=item.GetSourceStartFrame(),
        end_frame=item.GetSourceEndFrame(),
        record_start=item.GetStart(),
        record_end=item.GetEnd(),
        track_index=int(track_index),
    )


def read_video_tracks(timeline):
    """TrackState for every video track: locked flag and the record spans of its items."""
    tracks = []
    for index in range(1, int(timeline.GetTrackCount("video")) + 1):
        spans = [(it.GetStart(), it.GetEnd()) for it in timeline.GetItemListInTrack("video", index) or []]
        tracks.append(TrackState(index, bool(timeline.GetIsTrackLocked("video", index)), spans))
    return tracks


def get_or_create_bin(media_pool, name):
    """The bin called ``name`` directly under the media pool root, created when missing."""
    root = media_pool.GetRootFolder()
    for folder in root.GetSubFolderList() or []:
        if folder.GetName() == name:
            return folder
    return media_pool.AddSubFolder(root, name)


def import_into_bin(media_pool, folder, path):
    """The MediaPoolItem for ``path`` in ``folder``, reusing one a previous run imported.

    MediaPool.ImportMedia imports into the *current* folder, so the current folder is switched to the
    bin and restored afterwards, leaving the editor's media pool as it was.
    """
    for clip in folder.GetClipList() or []:
        if os.path.normcase(clip.GetClipProperty("File Path") or "") == os.path.normcase(path):
            return clip
    previous = media_pool.GetCurrentFolder()
    media_pool.SetCurrentFolder(folder)
    try:
        imported = media_pool.ImportMedia([path]) or []
    finally:
        if previous:
            media_pool.SetCurrentFolder(previous)
    return imported[0] if imported else None


def place(media_pool, timeline, item, media_pool_item):
    """Append ``media_pool_item`` above ``item``; returns (new TimelineItem or None, Placement).

    Timeline.AddTrack("video") with no index appends a track on top, which is what the track above
    the highest one needs. The result of AppendToTimeline is the list of appended TimelineItems; an
    empty list means Resolve refused (for example a locked or occupied range).
    """
    placement = plan_placement(read_source_range(item), read_video_tracks(timeline))
    for _ in range(placement.tracks_to_add):
        if not timeline.AddTrack("video"):
            return None, placement
    appended = media_pool.AppendToTimeline([clip_info(placement, media_pool_item)]) or []
    return (appended[0] if appended else None), placement


def add_output_marker(timeline, new_item, placement, output, color):
    """Mark the new clip with the output path (name, note and customData).

    TimelineItem.AddMarker's frameId is an offset within the clip (the README's GetMarkers example:
    "marker at clip offset 96"), so 0 is the clip's first frame. If Resolve refuses, fall back to a
    timeline marker, whose frameId is an offset from the timeline start (GetStartFrame()).
    """
    note = output
    if new_item.AddMarker(0, color, MARKER_NAME, note, 1, output):
        return True
    return bool(timeline.AddMarker(placement.record_frame - timeline.GetStartFrame(), color, MARKER_NAME, note, 1, output))


# --------------------------------------------------------------------------------------------------
# Main


def anonymize_source(name, source, config, argv_prefix, outputs, runner, on_progress_factory):
    """Run the CLI for one source file; returns a RunResult (a failure, never an exception but Cancelled).

    The output is the template's name, or ``-2``, ``-3``... when a file is already there or another
    source of this run claimed it (``outputs``: normalised output path -> source). Nothing existing
    is ever overwritten.
    """
    output = free_output_path(output_path_for(source, config), outputs)
    outputs[os.path.normcase(output)] = source
    try:
        if not os.path.isdir(os.path.dirname(output)):
            os.makedirs(os.path.dirname(output))
    except OSError as e:
        return RunResult(False, None, f"cannot create the output folder: {e}", None, None, None, None)
    log(f"{name}: anonymizing {source} -> {output} ({config['mode']})")
    return runner(argv_prefix, source, output, config, on_progress_factory(name))


def process(resolve, config, runner=run_cli, on_progress_factory=_progress_printer):
    """Anonymize the chosen clips of the current timeline; returns a list of ClipResult.

    Each clip is handled on its own: a clip that fails (no file, CLI error, import or append refused)
    is reported and skipped, nothing is placed for it, and the others go on. A source file used by
    several clips is anonymized once. When the stop file appears (or on Ctrl-C) the running CLI is
    interrupted and the clip it worked on and all later ones are reported as "cancelled"; clips
    placed before stay.
    """
    project = resolve.GetProjectManager().GetCurrentProject()
    if not project:
        raise ConfigError("no project is open")
    timeline = project.GetCurrentTimeline()
    if not timeline:
        raise ConfigError("the project has no current timeline")
    media_pool = project.GetMediaPool()
    found = find_target_items(timeline, config["clip_color"])
    if not found:
        what = f"clips with clip colour {config['clip_color']}" if config["clip_color"] else "a video clip under the playhead"
        log(f"nothing to do: found no {what} on timeline {timeline.GetName()!r}")
        return []
    items, results = choose_items(timeline, found)
    if not items:
        return results
    argv_prefix = cli_command(config)
    clear_stop(config)  # a leftover from an earlier stop must not end this run at once
    log(f"to stop: Workspace > Scripts > deid_edit_cancel, or create the file {stop_file_path(config)}")
    state = {"runs": {}, "outputs": {}, "bin": None}  # runs: source -> RunResult; outputs: output -> source
    stopped = None
    for item in items:
        name = item.GetName()
        if stopped is None and stop_requested(config):
            stopped = f"stopped ({stop_file_path(config)} appeared)"
        if stopped is not None:
            results.append(ClipResult(name, "cancelled", "not started: " + stopped, None, None))
            continue
        try:
            result = process_item(item, name, media_pool, timeline, config, argv_prefix, state, runner, on_progress_factory)
        except Cancelled as e:
            stopped = str(e)
            result = ClipResult(name, "cancelled", stopped, None, None)
        except KeyboardInterrupt:
            stopped = "interrupted (Ctrl-C)"
            result = ClipResult(name, "cancelled", stopped, None, None)
        except ClipFailed as e:
            result = ClipResult(name, "failed", str(e), e.output, None)
        except Exception as e:  # an unexpected answer from Resolve must not cost the other clips
            result = ClipResult(name, "failed", f"unexpected error: {e!r}", None, None)
        if result.status == "failed":
            log(f"ERROR {name}: {result.message}")
        elif result.status == "cancelled":
            log(f"{name}: {result.message}; nothing placed for it")
        results.append(result)
    if stopped is not None:
        clear_stop(config)
    return results


class ClipFailed(Exception):
    """One clip could not be processed; ``output`` is the anonymized file when it was already written."""

    def __init__(self, message, output=None):
        Exception.__init__(self, message)
        self.output = output


def process_item(item, name, media_pool, timeline, config, argv_prefix, state, runner, on_progress_factory):
    """Anonymize, import, place and mark one TimelineItem; returns a ClipResult or raises ClipFailed (or Cancelled)."""
    source = source_path(item)
    if not source:
        log(f"{name}: skipped, it has no media file")
        return ClipResult(name, "skipped", "no media file (title, generator or compound clip)", None, None)
    runs = state["runs"]
    if source not in runs:
        runs[source] = anonymize_source(name, source, config, argv_prefix, state["outputs"], runner, on_progress_factory)
    run = runs[source]
    if not run.ok:
        raise ClipFailed(run.message)
    if state["bin"] is None:
        state["bin"] = get_or_create_bin(media_pool, config["bin"])
        if not state["bin"]:
            raise ClipFailed(f"could not create the media pool bin {config['bin']!r}", run.output)
    anon_item = import_into_bin(media_pool, state["bin"], run.output)
    if anon_item is None:
        raise ClipFailed(f"Resolve could not import {run.output}", run.output)
    try:
        new_item, placement = place(media_pool, timeline, item, anon_item)
    except ValueError as e:
        raise ClipFailed(str(e), run.output) from e
    if new_item is None:
        raise ClipFailed(f"Resolve refused to place it on video track {placement.track_index}", run.output)
    if not add_output_marker(timeline, new_item, placement, run.output, config["marker_color"]):
        log(f"{name}: placed, but Resolve refused the marker")
    log(f"{name}: placed on V{placement.track_index} at frame {placement.record_frame} ({run.faces} face(s), {run.kept} kept)")
    return ClipResult(name, "placed", f"{run.faces} face(s), {run.kept} kept", run.output, placement.track_index)


def main(resolve=None, config=None, runner=run_cli):
    """Entry point for Workspace > Scripts; returns the per-clip results (empty on a setup error)."""
    try:
        config = load_config() if config is None else validate_config(dict(config))
        resolve = get_resolve() if resolve is None else resolve
        if resolve is None:
            raise ConfigError(
                "DaVinci Resolve is not reachable: run this from Workspace > Scripts, or set up "
                "RESOLVE_SCRIPT_API / PYTHONPATH as the Resolve scripting README describes"
            )
        results = process(resolve, config, runner)
    except ConfigError as e:
        log(f"ERROR {e}")
        return []
    failed = [r for r in results if r.status == "failed"]
    placed = [r for r in results if r.status == "placed"]
    cancelled = [r for r in results if r.status == "cancelled"]
    skipped = len(results) - len(placed) - len(failed) - len(cancelled)
    summary = f"{len(placed)} placed, {len(failed)} failed, {skipped} skipped"
    if cancelled:
        log(f"cancelled: {summary}, {len(cancelled)} cancelled (clips placed before the stop stay)")
    else:
        log(f"done: {summary}")
    for r in failed:
        log(f"  failed: {r.name}: {r.message}")
    return results


if __name__ == "__main__":
    main()
