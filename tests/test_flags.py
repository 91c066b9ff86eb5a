"""Each command-line flag reaches the stage config.FLAGS names, and nothing else; every flag an
error message names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import pytest

from deid_edit.cli import cli
from deid_edit.config import FLAGS, AnalyzeConfig, ShotConfig, encode_config, flag_for, render_config, route
from deid_edit.errors import ConfigError

PACKAGE = Path(__file__).resolve().parents[1] / "deid_edit"
# parameters of the product commands that are not stage settings: files, selection, progress
NOT_SETTINGS = {
    "video", "output", "save_plan", "otio_path", "progress_kind", "plan_path", "in_dir", "out_dir", "jobs",
    "keep", "only", "keep_identity", "only_identity",
    "lookahead", "two_pass",  # how run schedules its stages, not a stage's setting
    "source", "dest", "latency", "when_late", "input_format", "idle_timeout",  # live's own
    "ray_address", "cpus_per_task", "gpus_per_task", "retries",  # batch --ray: where files run, not how
}  # fmt: skip
STAGE_COMMANDS = ("run", "analyze", "render", "batch", "live")


def _params(name: str) -> set[str]:
    command = cli.commands[name]
    return {p.name for p in command.params if p.name and p.expose_value}


def test_every_option_of_the_product_commands_is_routed_by_name() -> None:
    for name in STAGE_COMMANDS:
        params = _params(name) - NOT_SETTINGS
        assert params <= set(FLAGS), (name, sorted(params - set(FLAGS)))


def test_every_routed_flag_exists_on_a_command() -> None:
    everywhere = set().union(*(_params(n) for n in STAGE_COMMANDS))
    assert set(FLAGS) <= everywhere
    spelled = {opt for n in STAGE_COMMANDS for p in cli.commands[n].params if isinstance(p, click.Option) for opt in p.opts}
    for flag, targets in FLAGS.items():
        for section, field in targets:
            assert flag_for(section, field) in spelled, (flag, section, field)


def test_a_flag_reaches_only_its_stage() -> None:
    """--min-face is the detector's: it once also set the identity size floor by sharing a name."""
    cfg = AnalyzeConfig.from_options(min_face=16, threshold=0.4, weak_hits=0, recognizer="exact", mode="solid", crf=20)
    assert cfg.detect.min_face == 16 and cfg.identity.min_identity_face == 32
    assert cfg.detect.threshold == 0.4 and cfg.track.weak_hits == 0 and cfg.identity.recognizer == "exact"
    assert render_config(mode="solid", min_face=16).mode == "solid"
    assert encode_config(crf=20, mode="solid").crf == 20
    assert route({"min_face": 16, "mode": "solid"}, "identity") == {}
    # the one flag meant for two stages, as the table says
    assert AnalyzeConfig.from_options(device="cpu").detect.device == render_config(device="cpu").device == "cpu"


def test_an_unknown_option_is_refused() -> None:
    with pytest.raises(TypeError, match="config.FLAGS"):
        AnalyzeConfig.from_options(min_faces=16)
    assert AnalyzeConfig.from_options(min_faces=None) == AnalyzeConfig()  # not set: nothing to route


def test_a_setting_without_a_flag_is_named_as_a_setting() -> None:
    with pytest.raises(ConfigError, match=r"^shots\.adaptive_threshold \(Python API setting\) 0 is not allowed"):
        ShotConfig(adaptive_threshold=0)
    with pytest.raises(ConfigError, match=r"^--det-size 10 is not allowed"):
        AnalyzeConfig.from_options(max_side=10)


def _docstrings(tree: ast.AST) -> set[int]:
    nodes = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, nodes) and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)
    }


def test_every_flag_a_message_names_exists() -> None:
    """Every --flag in the package's strings (error messages, warnings, help; f-strings included)
    is an option of a deid-edit command. Docstrings may discuss history; the converters and the
    sample writer have their own argparse flags (python -m ...)."""
    real = {opt for command in cli.commands.values() for p in command.params if isinstance(p, click.Option) for opt in p.opts}
    real |= {"--help", "--version"}
    named: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if "convert" in path.parts or path.name == "sample.py":
            continue
        tree = ast.parse(path.read_text())
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", node.value):
                    named.setdefault(flag, []).append(f"{path.name}:{node.lineno}")
    missing = {flag: where for flag, where in named.items() if flag not in real}
    assert len(named) > 20 and missing == {}
