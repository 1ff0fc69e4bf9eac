"""Training runs described by a TOML (or YAML) file: what ``itkdeepreg train`` and
``finetune`` read.

Four tables, every key optional (the defaults are below, in :data:`DEFAULTS`)::

    [model]      # train: a new network; finetune: method = a registered network method
    architecture = "gradicon"
    dimension = 2
    shape = [128, 128]
    [data]       # "synthetic", a folder, a CSV file, or a list of image files
    source = "synthetic"
    [objective]  # phases = [{steps = 500, regularizer = "diffusion", weight = 1.0}] come first
    similarity = "lncc"
    [train]
    steps = 1000
    output = "training"

The run writes the configuration it used (``config.toml``) beside the weights in ``output``, so
the folder is a method: :func:`~itkdeepreg.methods.trained_method`.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import tomllib
from pathlib import Path

from ..files import write_atomically
from ..zoo.architectures import architecture_options, network_from_config
from ..zoo.preprocessing import preprocess
from .objectives import Objective, Schedule

DEFAULTS = {
    "model": {
        # train: a network of zoo.architectures (its builder's options are [model] keys too)
        "architecture": "gradicon",
        "method": "",  # finetune: a registered network method ("unigradicon", ...)
        "weights": "",  # finetune: weights instead of the method's own
        "dimension": 2,
        "shape": [128, 128],
        "modality": "mri",
    },
    "data": {
        "source": "synthetic",
        "labels": 16,  # synthetic label maps
        "contrast": "same",  # synthetic: "same" or "independent" label intensities
        "deformation": 0.03,  # synthetic: the largest RMS of a random velocity field
        "background": 0.5,  # synthetic: the probability of a dark background
        "pairing": "inter",  # images from files: "inter", "intra" or "any" subject
        "cache_directory": "",
        "augment": True,
    },
    "objective": {
        "similarity": "lncc",
        "regularizer": "gradicon",
        "weight": 1.5,
        "phases": [],
    },
    "train": {
        "steps": 1000,
        "batch_size": 4,
        "learning_rate": 1e-4,
        "output": "training",
        "checkpoint_every": 100,
        "resume": True,
        "seed": 0,
        "device": "",
        "mixed_precision": False,
        "tensorboard": False,
    },
}
POSITIVE = ("steps", "batch_size", "learning_rate", "checkpoint_every", "labels")
OBJECTIVE_KEYS = ("similarity", "regularizer", "weight")
FINETUNE_MODEL_KEYS = {"method", "weights", "modality"}  # the rest is the method's network
FINETUNE_LEARNING_RATE = 2e-5  # uniGradICON's instance optimization rate, for a trained model
CONFIG = "config.toml"


def read_config(path=None, overrides=(), finetune=False) -> dict:
    """The configuration of a TOML or YAML file (``.yaml``, ``.yml``; or none: the defaults)
    with ``section.key=value`` overrides (values in TOML syntax; a bare word is a string),
    checked key by key."""
    config = copy.deepcopy(DEFAULTS)
    if finetune:
        config["train"]["learning_rate"] = FINETUNE_LEARNING_RATE
    given = {} if path is None else _read_file(path)
    for text in overrides:
        key, equals, value = text.partition("=")
        section, dot, name = key.strip().partition(".")
        if not equals or not dot:
            raise ValueError(f"an override is section.key=value, got {text!r}")
        given.setdefault(section, {})[name] = _value(value.strip())
    where = path or "the overrides"
    given_model = given.get("model") if isinstance(given.get("model"), dict) else {}
    if finetune:
        ignored = sorted(set(given_model) - FINETUNE_MODEL_KEYS)
        if ignored:
            raise ValueError(
                f"{where}: finetune keeps the network of [model] method; it takes no "
                f"{', '.join(ignored)}"
            )
    else:  # the architecture's options become [model] keys, with their defaults
        architecture = given_model.get("architecture", DEFAULTS["model"]["architecture"])
        try:
            config["model"].update(architecture_options(architecture))
        except (ValueError, TypeError) as error:
            raise ValueError(f"{where}: [model] architecture: {error}") from None
    for section, values in given.items():
        if section not in config or not isinstance(values, dict):
            raise ValueError(f"{where}: unknown table [{section}]{_close(section, config)}")
        for key, value in values.items():
            if key not in config[section]:
                raise ValueError(
                    f"{where}: unknown key {key!r} in [{section}]{_close(key, config[section])}"
                )
            config[section][key] = _checked(where, section, key, value, config[section][key])
    model = config["model"]
    if finetune:
        if not model["method"]:
            raise ValueError(f"{where}: finetune needs [model] method, a registered network")
        if "modality" not in given_model:
            model["modality"] = ""  # the method's own
    elif model["method"] or model["weights"]:
        raise ValueError(f"{where}: [model] method and weights are for finetune")
    return config


def _checked(where, section, key, value, default):
    """``value`` of ``[section] key``, if it has the type (and range) of the default."""
    expected = type(default)
    if expected is float and type(value) is int:
        value = float(value)
    if (section, key) == ("data", "source") and _is_list_of_strings(value):
        return value  # a list of image files
    if type(value) is not expected:
        raise ValueError(f"{where}: [{section}] {key} must be a {expected.__name__}, got {value!r}")
    if key in POSITIVE and not value > 0:
        raise ValueError(f"{where}: [{section}] {key} must be positive, got {value!r}")
    if key == "phases":
        for phase in value:
            unknown = set(phase) - {"steps", *OBJECTIVE_KEYS} if isinstance(phase, dict) else 0
            if unknown or not isinstance(phase, dict):
                raise ValueError(
                    f"{where}: [objective] a phase is a table of steps, "
                    f"{', '.join(OBJECTIVE_KEYS)}; got {phase!r}"
                )
    return value


def _is_list_of_strings(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def _read_file(path) -> dict:
    """The tables of a TOML or YAML file; a parse error names the file and the line."""
    try:
        with open(path, "rb") as file:
            if str(path).lower().endswith((".yaml", ".yml")):
                return _read_yaml(path, file)
            return tomllib.load(file)
    except FileNotFoundError:
        raise FileNotFoundError(f"no configuration file {path}") from None
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: {error}") from None


def _read_yaml(path, file) -> dict:
    try:
        import yaml
    except ImportError:
        raise ImportError(
            f"{path} is YAML, which needs PyYAML: pip install pyyaml (or write it as TOML)"
        ) from None
    try:
        tables = yaml.safe_load(file)
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: {error}") from None
    if tables is None:
        return {}
    if not isinstance(tables, dict):
        raise ValueError(f"{path}: a configuration is a mapping of tables, got {tables!r}")
    return tables


def run(config: dict, progress: bool = True) -> list[dict]:
    """Train (or fine-tune) as ``config`` says; the log rows. Everything is checked, and the
    output folder made, before the first step."""
    from .loop import read_checkpoint, train

    model, shape, modality, preprocessing = build_model(config["model"])
    data = build_data(config["data"], shape, modality, preprocessing)
    objective = build_objective(config["objective"])
    settings = config["train"]
    output = Path(settings["output"])
    recorded = copy.deepcopy(config)
    recorded["model"].update(shape=list(shape), modality=modality)
    if os.path.isdir(recorded["model"]["method"]):  # a trained folder: found from anywhere
        recorded["model"]["method"] = os.path.abspath(recorded["model"]["method"])
    _check_same_model(output, recorded["model"], settings["resume"])
    if settings["resume"]:  # a bad checkpoint is refused before the folder is touched
        read_checkpoint(output, model, settings["steps"])
    output.mkdir(parents=True, exist_ok=True)
    write_atomically(output / CONFIG, lambda path: Path(path).write_text(to_toml(recorded)))
    from .augment import augment

    return train(
        model,
        data,
        objective,
        steps=settings["steps"],
        batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"],
        output=output,
        checkpoint_every=settings["checkpoint_every"],
        resume=settings["resume"],
        seed=settings["seed"],
        augment=augment if config["data"]["augment"] else None,
        device=settings["device"] or None,
        mixed_precision=settings["mixed_precision"],
        tensorboard=settings["tensorboard"],
        progress=progress,
    )


def _check_same_model(output: Path, model: dict, resume: bool) -> None:
    """Refuse to resume, in ``output``, a run of another model (before its config.toml is
    overwritten, which would orphan its weights)."""
    previous = output / CONFIG
    if not (resume and (output / "checkpoint.pt").exists() and previous.exists()):
        return
    try:
        recorded = tomllib.loads(previous.read_text()).get("model", {})
    except (OSError, tomllib.TOMLDecodeError):
        return  # unreadable: the checkpoint itself decides
    if recorded != model:
        changed = sorted(
            k for k in model.keys() | recorded.keys() if model.get(k) != recorded.get(k)
        )
        raise ValueError(
            f"{output} holds a run of another model ([model] {', '.join(changed)} differ); "
            "train into another folder, or set train.resume = false to start it afresh"
        )


def build_model(section: dict):
    """``(model, grid shape, modality, preprocessing)``: a new network, or a registered
    method's with its weights and its intensity recipe (fine-tuning)."""
    from ..methods import NetworkMethod, get_method

    if section["method"]:
        method = get_method(section["method"])
        if not isinstance(method, NetworkMethod):
            raise ValueError(f"{section['method']} is not a network: there is nothing to tune")
        model = method.build(section["weights"] or None)
        modality = section["modality"] or method.modality
        return model, method.shape, modality, method.preprocessing
    shape = tuple(section["shape"])
    if len(shape) != section["dimension"]:
        raise ValueError(f"[model] shape {list(shape)} is not {section['dimension']}D")
    return network_from_config(section), shape, section["modality"], preprocess


def build_data(section: dict, shape, modality, preprocessing):
    """The data source: synthetic pairs, or images from a folder, a CSV file or a file list."""
    source = section["source"]
    if source == "synthetic":
        from .synthetic import SyntheticPairs

        return SyntheticPairs(
            shape,
            labels=section["labels"],
            deformation=section["deformation"],
            background=section["background"],
            contrast=section["contrast"],
        )
    from .data import ImagePairs

    options = dict(
        shape=shape,
        modality=modality,
        preprocessing=preprocessing,
        pairing=section["pairing"],
        cache_directory=section["cache_directory"] or None,
    )
    if isinstance(source, list):
        pairs = ImagePairs.from_files(source, **options)
    elif os.path.isdir(source):
        pairs = ImagePairs.from_folder(source, **options)
    elif source.lower().endswith(".csv"):
        pairs = ImagePairs.from_csv(source, **options)
    else:
        raise ValueError(
            f"[data] source {source!r} is not 'synthetic', a folder, a CSV file or a list of files"
        )
    return pairs.preload()  # a bad file fails now, not hours into the run


def build_objective(section: dict):
    """An :class:`Objective`, or a :class:`Schedule` when phases come first."""
    main = Objective(section["similarity"], section["regularizer"], section["weight"])
    if not section["phases"]:
        return main
    phases = []
    for phase in section["phases"]:
        phase = dict(phase)
        steps = phase.pop("steps", None)
        if not isinstance(steps, int):
            raise ValueError(f"[objective] a phase needs a whole number of steps, got {steps!r}")
        phases.append((steps, Objective(**{**_objective_keys(section), **phase})))
    return Schedule((*phases, main))


def to_toml(config: dict) -> str:
    """The configuration as TOML (tables of strings, numbers, booleans, lists and tables), which
    :mod:`tomllib` reads back exactly (tests/test_toml.py)."""
    lines = []
    for section, values in config.items():
        lines.append(f"[{_toml_key(section)}]")
        lines += [f"{_toml_key(key)} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


# TOML 1.0 basic strings: a quote, a backslash and the control characters U+0000-U+001F, U+007F
# are escaped; the short escapes where TOML has one, \uXXXX for the rest
_SHORT_ESCAPES = {"\b": "b", "\t": "t", "\n": "n", "\f": "f", "\r": "r", '"': '"', "\\": "\\"}
_TO_ESCAPE = re.compile(r'[\x00-\x1f\x7f"\\]')


def _toml_string(text: str) -> str:
    def escape(match):
        character = match[0]
        return "\\" + _SHORT_ESCAPES.get(character, f"u{ord(character):04X}")

    return '"' + _TO_ESCAPE.sub(escape, text) + '"'


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_string(key)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # inf, -inf and nan are TOML too
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, dict):
        items = (f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"TOML has no {type(value).__name__}: {value!r}")


def _objective_keys(section):
    return {k: section[k] for k in OBJECTIVE_KEYS}


def _value(text: str):
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: a string


def _close(word, known) -> str:
    matches = difflib.get_close_matches(word, list(known), n=1)
    return f"; did you mean {matches[0]!r}?" if matches else f"; known: {', '.join(known)}"
