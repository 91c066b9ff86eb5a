#!/usr/bin/env bash
# GPU check and speed table for the torch inference backend, run from the repository root on a
# machine with a CUDA PyTorch (and no onnxruntime-gpu). Installs only small wheels, never torch:
# onnx, onnx2torch (--no-deps: its torchvision requirement would make pip replace the CUDA torch),
# the package's own runtime dependencies (from ./wheels when that folder exists), pytest, and
# matplotlib --no-deps (only its bundled photo file is read, for the generated test clip).
# Then: pytest -m gpu, and one table per clip x mode with fps of analyze, render, run (one decode) and
# run --two-pass, the
# transcode floor (benchmarks/speed.py) measured in the same run, the CUDA memory peak, and for clips
# up to COMPARE_FRAMES (400) frames the face-frames of a CPU (ONNX Runtime) plan that the GPU plan's
# mask covers less than 90% ("no more leaks than the CPU path"). The cloak rows use
# $DEID_EDIT_CLOAK_MODEL, else models/cloak.onnx, when one exists.
# Budget: well under 8 minutes on one H100 (a time guard skips remaining rows past --budget s).
#
# usage: bash benchmarks/gpu.sh [--device cuda|cpu] [--backend auto|torch|onnxruntime]
#                               [--clips "a.mp4 b.mp4 long60"] [--seconds 60] [--budget 330]
#                               [--no-install] [--no-tests]
# Clips are names in $DEID_EDIT_SHARED/footage (default ../shared/footage, then ./shared/footage)
# or paths; "long60" is sofa_interviewee_1080p.mp4 repeated to --seconds by packet copy (PyAV).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEVICE=cuda BACKEND=auto SECONDS_LONG=60 BUDGET=330 INSTALL=1 TESTS=1
CLIPS="sofa_interviewee_1080p.mp4 crowd_small_faces_1080p.mp4 long60"
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE=$2; shift 2 ;;
    --backend) BACKEND=$2; shift 2 ;;
    --clips) CLIPS=$2; shift 2 ;;
    --seconds) SECONDS_LONG=$2; shift 2 ;;
    --budget) BUDGET=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --no-tests) TESTS=0; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "${DEID_EDIT_SHARED:-}" ]; then
  if [ -d ../shared/footage ]; then export DEID_EDIT_SHARED=../shared; elif [ -d shared/footage ]; then export DEID_EDIT_SHARED=shared; fi
fi

if [ "$INSTALL" = 1 ]; then
  SRC=()
  [ -d wheels ] && SRC=(--find-links wheels)
  has() { "$PY" -c "import importlib.util,sys; sys.exit(0 if importlib.util.find_spec('$1') else 1)"; }
  has onnx || "$PY" -m pip install -q "${SRC[@]}" "onnx>=1.16"
  has onnx2torch || "$PY" -m pip install -q "${SRC[@]}" --no-deps "onnx2torch>=1.5"
  has matplotlib || "$PY" -m pip install -q "${SRC[@]}" --no-deps matplotlib
  has pytest || "$PY" -m pip install -q "${SRC[@]}" pytest pytest-timeout
  has deid_edit || "$PY" -m pip install -q "${SRC[@]}" -e .  # torch is not a dependency: pip leaves it alone
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"

if [ "$TESTS" = 1 ]; then
  "$PY" -m pytest -m gpu tests -q -p no:cacheprovider --continue-on-collection-errors --timeout 120 || echo "pytest -m gpu FAILED (table follows anyway)"
fi

DEVICE=$DEVICE BACKEND=$BACKEND CLIPS=$CLIPS SECONDS_LONG=$SECONDS_LONG BUDGET=$BUDGET "$PY" - <<'EOF'
import os, sys, tempfile, time
from pathlib import Path

import av

sys.path.insert(0, "benchmarks")
from leaks import plan_misses  # noqa: E402
from speed import transcode_floor  # noqa: E402

import deid_edit  # noqa: E402
from deid_edit.config import AnalyzeConfig, EncodeConfig, RenderConfig  # noqa: E402
from deid_edit.io.decode import probe  # noqa: E402
from deid_edit.render import ANONYMIZERS  # noqa: E402

device, backend, budget = os.environ["DEVICE"], os.environ["BACKEND"], float(os.environ["BUDGET"])
shared = Path(os.environ.get("DEID_EDIT_SHARED", "../shared")) / "footage"
t_start = time.perf_counter()
try:
    import torch
    cuda = torch.cuda.is_available() and device.startswith("cuda")
except ImportError:
    torch, cuda = None, False


def long_clip(src: Path, dst: Path, seconds: float) -> Path:
    """``src``'s video stream repeated to ``seconds`` by packet copy (no re-encode, no audio)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        packets = [p for p in inp.demux(vin) if p.dts is not None and p.pts is not None]
        span = max(p.pts + (p.duration or 0) for p in packets) - min(p.pts for p in packets)
        reps = max(1, round(seconds / float(span * vin.time_base)))
        for r in range(reps):
            for p in packets:
                p.pts, p.dts = p.pts + (span if r else 0), p.dts + (span if r else 0)
                p.stream = vout
                out.mux(p)
    return dst


def peak_reset() -> None:
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_mib() -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")


cloak_file = os.environ.get("DEID_EDIT_CLOAK_MODEL") or "models/cloak.onnx"  # a model under evaluation, else the shipped one
modes = ["blur"] + (["cloak"] if Path(cloak_file).is_file() and "cloak" in ANONYMIZERS else [])
compare_max = int(os.environ.get("COMPARE_FRAMES", "400"))  # CPU reference plan only for clips this short

acfg = AnalyzeConfig.from_options(device=device, backend=backend)
rows, provider = [], "?"
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    clips = []
    for name in os.environ["CLIPS"].split():
        if name == "long60":
            clips.append(long_clip(shared / "sofa_interviewee_1080p.mp4", tmp / f"sofa_{os.environ['SECONDS_LONG']}s.mp4",
                                   float(os.environ["SECONDS_LONG"])))
        else:
            clips.append(Path(name) if os.path.exists(name) else shared / name)
    for src in clips:
        info = probe(src)
        floor = transcode_floor(src, tmp / f"floor{src.suffix}", EncodeConfig(force=True))
        vs_cpu = None
        if info.frame_count <= compare_max and device != "cpu" and time.perf_counter() - t_start < budget:
            cpu_plan = deid_edit.analyze(src, AnalyzeConfig.from_options(device="cpu", backend="onnxruntime"))
            total, missed = plan_misses(cpu_plan, deid_edit.analyze(src, acfg))  # the GPU path leaks nothing the CPU path covers
            vs_cpu = (total, len(missed))
        for mode in modes:
            if time.perf_counter() - t_start > budget:
                rows.append((src.name, mode, info.frame_count, None))
                continue
            rcfg, ecfg = RenderConfig(mode=mode, device=device, backend=backend), EncodeConfig(force=True)
            peak_reset()
            t0 = time.perf_counter()
            plan = deid_edit.analyze(src, acfg)
            t_an, mem_an = time.perf_counter() - t0, peak_mib()
            provider = plan.config.get("provider", "?")
            peak_reset()
            t0 = time.perf_counter()
            deid_edit.render(src, plan, tmp / f"render{src.suffix}", rcfg, ecfg)
            t_re, mem_re = time.perf_counter() - t0, peak_mib()
            peak_reset()
            t0 = time.perf_counter()
            deid_edit.run(src, tmp / f"run{src.suffix}", acfg, rcfg, ecfg)  # one decode (streaming)
            t_run, mem_run = time.perf_counter() - t0, peak_mib()
            t0 = time.perf_counter()
            deid_edit.run(src, tmp / f"two{src.suffix}", acfg, rcfg, ecfg, two_pass=True)
            t_two = time.perf_counter() - t0
            n = plan.frame_count
            rows.append((src.name, mode, n, (n / t_an, n / t_re, n / t_run, n / t_two, n / floor, max(mem_an, mem_re, mem_run), vs_cpu)))

gpu = torch.cuda.get_device_name(0) if cuda else "none"
print(f"\ndevice={device} backend={backend} -> provider={provider} gpu={gpu} cpus={os.cpu_count()} "
      f"torch={getattr(torch, '__version__', 'absent')} wall={time.perf_counter() - t_start:.0f}s")
head = (f"| {'clip':32} | {'mode':5} | {'frames':6} | {'analyze fps':11} | {'render fps':10} | {'run fps':7} | {'2-pass fps':10} "
        f"| {'floor fps':9} | {'run/floor':9} | {'GPU peak MiB':12} | {'missed vs CPU plan':18} |")
print(head)
print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
for clip, mode, n, r in rows:
    if r is None:
        print(f"| {clip:32} | {mode:5} | {n:6d} | {'skipped: over --budget':>83} | {'':12} | {'':18} |")
        continue
    a, re_, ru, two, fl, mem, vs = r
    vs_s = "not compared" if vs is None else f"{vs[1]} of {vs[0]}"
    print(f"| {clip:32} | {mode:5} | {n:6d} | {a:11.1f} | {re_:10.1f} | {ru:7.1f} | {two:10.1f} | {fl:9.1f} | {ru / fl:9.2f} "
          f"| {mem:12.0f} | {vs_s:>18} |")
EOF
