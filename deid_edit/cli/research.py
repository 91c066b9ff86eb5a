"""The research commands: extract-faces, train-cloak, export-cloak (the cloak's training).

Input: photo and video folders, a dataset, a training run. Output: face chips, checkpoints, an
ONNX model. Training needs the ``train`` extra (torch); each command imports it only when it runs,
so the product commands never load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .common import cli, verbosity_options


@cli.command("extract-faces")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Dataset folder to write.")
@click.option(
    "--holdout-people",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="Folder of photos of people never to train on: its files are skipped and matching faces dropped (repeatable).",
)
@click.option("--every", type=click.IntRange(1), default=10, show_default=True, help="Video: use every Nth frame.")
@click.option("--min-face", type=click.IntRange(8), default=64, show_default=True, help="Smallest face box side kept, in pixels.")
@click.option("--threshold", type=click.FloatRange(0.01, 0.99), default=0.5, show_default=True, help="Detection score threshold.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda[:N], ...")
@click.option("--force", is_flag=True, help="Replace an existing dataset folder.")
@verbosity_options
def extract_faces_command(
    sources: tuple[Path, ...],
    out_dir: Path,
    holdout_people: tuple[Path, ...],
    every: int,
    min_face: int,
    threshold: float,
    device: str,
    force: bool,
) -> None:
    """Cut aligned face chips out of photos and videos (SOURCES: files or folders) for train-cloak.

    LFW people (NAME/NAME_0001.jpg) in a fixed 10% are held out, as is everyone in --holdout-people.
    """
    from ..generator.extract import extract_faces

    report = extract_faces(
        sources, out_dir, holdout_people, every=every, min_face=min_face, threshold=threshold, device=device, force=force
    )
    click.echo(
        f"{report.chips} chips from {report.sources} files into {out_dir} ({report.no_face} without a usable face; held out: "
        f"{len(report.held_out_lfw)} LFW people, {report.held_out_files} files, {report.held_out_matches} matching faces)"
    )


@cli.command("train-cloak")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", "run_dir", type=click.Path(file_okay=False, path_type=Path), required=True, help="Run folder.")
@click.option("--steps", type=click.IntRange(1), help="Total steps of the run (default 20000).")
@click.option("--batch", type=click.IntRange(1, 1024), help="Faces per step (default 16).")
@click.option("--lr", type=float, help="Generator learning rate (default 2e-4).")
@click.option("--lr-d", type=float, help="Discriminator learning rate (default 2e-4).")
@click.option("--seed", type=int, help="Seed of weights, batches and augmentation (default 0).")
@click.option("--checkpoint-every", type=click.IntRange(1), help="Steps between checkpoints (default 500).")
@click.option("--threads", type=click.IntRange(0), help="torch threads (0 = torch's default).")
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR from its checkpoint up to --steps.")
@click.option(
    "--loss-weight",
    "loss_weights",
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a loss weight of a new run: attract, repel, margin, recon, mask_l1, mask_tv, adv, landmarks (repeatable).",
)
@click.option(
    "--init-from",
    "init",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Start a new run from the generator/discriminator weights of another run folder (step 0, this run's loss weights).",
)
@verbosity_options
def train_cloak_command(data_dir: Path, run_dir: Path, resume: bool, loss_weights: tuple[str, ...], init: Path | None, **opts: Any) -> None:
    """Train the cloak generator on a dataset folder made by extract-faces (needs the [train] extra)."""
    from dataclasses import fields

    from ..generator.train import LossWeights, TrainConfig, train

    values: dict[str, Any] = {k: v for k, v in opts.items() if v is not None}
    if loss_weights:
        known = {f.name for f in fields(LossWeights)}
        chosen: dict[str, float] = {}
        for item in loss_weights:
            name, _, value = item.partition("=")
            try:
                if name not in known:
                    raise ValueError(name)
                chosen[name] = float(value)
            except ValueError:
                hint = f"{item!r}: use NAME=VALUE with NAME one of {', '.join(sorted(known))}"
                raise click.BadParameter(hint, param_hint="--loss-weight") from None
        values["weights"] = LossWeights(**chosen)
    cfg = TrainConfig(**values)

    def report(step: int, record: dict[str, float]) -> None:
        if step % 50 == 0 or step == cfg.steps:
            click.echo(
                f"step {step}: total {record['total']:.4f} repel {record['repel']:.4f} id_distance {record['id_distance']:.3f} "
                f"mask {record['mask_mean']:.3f} ({record['seconds']:.2f} s/step)",
                err=True,
            )

    if init is not None and resume:
        raise click.BadParameter("a resumed run keeps its own weights; drop --init-from or --resume", param_hint="--init-from")
    trainer = train(data_dir, run_dir, cfg, resume=resume, on_step=report, init=init)
    click.echo(f"{run_dir} (step {trainer.step})")


@cli.command("export-cloak")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True, help="ONNX file, e.g. models/cloak.onnx.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@verbosity_options
def export_cloak_command(run_dir: Path, output: Path, force: bool) -> None:
    """Export the trained cloak generator of RUN_DIR to ONNX (chip + descriptor in; cloaked chip + mask out)."""
    from ..generator.export import export_run

    click.echo(str(export_run(run_dir, output, force)))
