"""``itkdeepreg train`` and ``itkdeepreg finetune``: a network from a configuration file."""

from __future__ import annotations

from ._base import text


def add_parser(commands) -> None:
    for name, summary, detail in (
        (
            "train",
            "train a network (a GradICON model by default) from a configuration file",
            "Build the network that [model] describes and train it on [data] (synthetic "
            "SynthMorph-style pairs by default, or images from a folder, a CSV file or a list "
            "of files) under [objective]. ",
        ),
        (
            "finetune",
            "fine-tune a registered network (uniGradICON, say) on your images",
            "Start from the network of [model] method (its weights, grid and modality; "
            "[model] weights for others) and train it on [data] at a low learning rate. ",
        ),
    ):
        p = commands.add_parser(
            name,
            help=summary,
            description=text(
                detail + "The output folder receives checkpoint.pt (a run continues from it), "
                "log.csv, config.toml and weights.pt; the folder is then a method: "
                "itkdeepreg register --method FOLDER. Under torchrun, every process trains "
                "on its own batches (data parallel). Keys and defaults: docs/training.md."
            ),
        )
        p.add_argument(
            "config", nargs="?", metavar="CONFIG", help="the configuration (.toml, .yaml)"
        )
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="TABLE.KEY=VALUE",
            help="override a key, value in TOML syntax (--set train.steps=200); repeatable",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(run=run, finetune=name == "finetune")


def run(args) -> int:
    from ..train import distributed
    from ..train.config import read_config
    from ..train.config import run as train

    config = read_config(args.config, args.set, finetune=args.finetune)
    rows = train(config, progress=not args.quiet)
    distributed.teardown()
    output = config["train"]["output"]
    if rows:
        print(f"step {rows[-1]['step']}: loss {rows[-1]['loss']:.4f}; wrote into {output}:")
    else:
        print(f"nothing to do: {output} holds a checkpoint of every step asked for")
    print(f"  weights.pt, checkpoint.pt, log.csv, config.toml; use: --method {output}")
    return 0
