"""Train a small GradICON on synthetic pairs, register with it, then fine-tune it on images.

python examples/training.py [output folder]

The same runs from the command line: ``itkdeepreg train RECIPE.toml --set train.steps=40``,
``itkdeepreg register --method FOLDER ...`` and ``itkdeepreg finetune``.
"""

import sys
from pathlib import Path

import itk

import itkdeepreg  # noqa: F401  (adds itk.deep_registration_method)
from itkdeepreg.data.brain_pairs import brain_pair
from itkdeepreg.train import read_config, run

RECIPE = Path(__file__).parent / "training" / "synth_gradicon_2d.toml"
SMALL = [  # the recipe, made small enough to run in a minute on a laptop
    "model.shape=[64, 64]",
    "model.levels=2",
    "model.refinements=0",
    "train.steps=40",
    "train.batch_size=4",
]


def main(output="."):
    output = Path(output)
    # 1. a network of our own, trained on synthetic SynthMorph-style pairs: no images needed
    trained = output / "synthetic"
    config = read_config(RECIPE, [*SMALL, f"train.output={trained}"])
    rows = run(config, progress=False)
    print(f"trained {len(rows)} steps: loss {rows[0]['loss']:.3f} -> {rows[-1]['loss']:.3f}")

    # 2. the folder is a method: the ITK face (and --method FOLDER) registers with it
    pair = brain_pair(seed=0, dimension=2)
    fixed, moving = pair.itk_images()
    warped, transform = itk.deep_registration_method(
        fixed, moving, method=str(trained), show_progress=False
    )

    # 3. fine-tuning on a user's images: here a folder of two subjects, one image each
    images = output / "images"
    for subject, image in zip(("subject-1", "subject-2"), (fixed, moving)):
        (images / subject).mkdir(parents=True, exist_ok=True)
        itk.imwrite(image, str(images / subject / "t1.nii.gz"))
    tuned = output / "finetuned"
    settings = [f"model.method={trained}", f"data.source={images}", "train.steps=10"]
    config = read_config(None, [*settings, f"train.output={tuned}"], finetune=True)
    rows = run(config, progress=False)
    print(f"fine-tuned {len(rows)} steps at learning rate {config['train']['learning_rate']}")
    return warped, transform, tuned


if __name__ == "__main__":
    main(*sys.argv[1:])
