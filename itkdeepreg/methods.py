"""Registration methods by name: networks and optimization behind one call.

A method is a callable ``method(pair, **options) -> OptimizationResult``: it registers a
:class:`Pair` (images with their geometry, masks, segmentations) and returns the map from the
fixed image's unit cube to the moving image's and its inverse. :func:`run_method` is the one
place methods are called: it looks the method up by name, checks the options, and starts it
from an initial transform. The ITK face, parameter files, pipelines and the command line all
go through it, so a method registered here is usable everywhere.

Built in: ``"translation"``, ``"rigid"``, ``"affine"``, ``"deformable"`` and
``"affine-deformable"`` (registration by optimization; the last is the one to start with for
two arbitrary images), and the published networks ``"unigradicon"``, ``"multigradicon"``,
``"gradicon-lung"``, ``"gradicon-knee"`` and ``"gradicon-brain"``, with or without instance
optimization. :func:`register_method` adds a method (a :class:`NetworkMethod` wraps a model).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import math
import numbers
import os
import reprlib
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from . import losses
from .geometry import PLACEMENTS, ImageGeometry
from .models import register_pair
from .optimize import (
    OptimizationResult,
    optimize_fields,
    optimize_weights,
    register_affine,
    register_deformable,
)
from .optimize.affine import INITIALIZATIONS
from .optimize.deformable import PARAMETERIZATIONS, REGULARIZERS
from .optimize.nephi import SIMILARITIES as NEPHI_SIMILARITIES
from .sampling import identity_grid, resample, sample
from .transforms import Affine, Displacement, Transform, invert
from .zoo import (
    OWN_MODELS,
    OWN_MODELS_FOLDER,
    preprocess,
    preprocess_gradicon_brain,
    preprocess_gradicon_lung,
)
from .zoo import gradicon as Z
from .zoo import weights as W
from .zoo.architectures import network_from_config

SIMILARITIES = losses.SIMILARITIES


@dataclass
class Pair:
    """Two images ``[1, 1, *shape]`` (raw intensities) and their geometries.

    ``*_mask``: a region on its image's grid: where the similarity counts for the optimization
    methods; a network uses masks as its options ``input_masking`` and ``loss_masking`` say.
    ``*_segmentation``: a label map: a network's Dice term (``dice_weight``), or both, without
    masks, the masks (the published, deprecated fallback); the optimization methods multiply
    their image by it.
    """

    moving: torch.Tensor
    fixed: torch.Tensor
    moving_geometry: ImageGeometry
    fixed_geometry: ImageGeometry
    moving_mask: torch.Tensor | None = None
    fixed_mask: torch.Tensor | None = None
    moving_segmentation: torch.Tensor | None = None
    fixed_segmentation: torch.Tensor | None = None

    def __post_init__(self):
        for side in ("moving", "fixed"):
            image = getattr(self, side)
            geometry = getattr(self, f"{side}_geometry")
            if tuple(image.shape[2:]) != geometry.shape:
                raise ValueError(
                    f"the {side} image has shape {tuple(image.shape)}, its geometry "
                    f"{geometry.shape}"
                )
            for kind in ("mask", "segmentation"):
                extra = getattr(self, f"{side}_{kind}")
                if (
                    extra is not None
                    and tuple(extra.shape[-len(geometry.shape) :]) != geometry.shape
                ):
                    raise ValueError(
                        f"the {side} {kind} has shape {tuple(extra.shape)}, its image "
                        f"{tuple(image.shape)}: give it on its image's grid"
                    )

    def through(self, initial: Transform) -> Pair:
        """The pair with the moving side carried onto the fixed grid by ``initial`` (fixed cube
        -> moving cube): what a method started from ``initial`` registers."""
        shape = self.fixed_geometry.shape

        def warp(image, mode):
            if image is None:
                return None
            warped = initial.warp(image.to(self.fixed.device, torch.float32), shape, mode=mode)
            return warped.to(image.dtype) if mode == "nearest" else warped

        return dataclasses.replace(
            self,
            moving=warp(self.moving, "linear"),
            moving_geometry=self.fixed_geometry,
            moving_mask=warp(self.moving_mask, "nearest"),
            moving_segmentation=warp(self.moving_segmentation, "nearest"),
        )

    def segmented(self, side: str) -> torch.Tensor:
        """The ``side`` image multiplied by its segmentation, if it has one."""
        image, segmentation = getattr(self, side), getattr(self, f"{side}_segmentation")
        return image if segmentation is None else image * (segmentation != 0).to(image.dtype)


Method = Callable[..., OptimizationResult]
_METHODS: dict[str, Method] = {}


def register_method(name: str, method: Method) -> None:
    """Make ``method`` available by ``name`` everywhere: the ITK face, parameter files,
    pipelines and the command line. A name registered twice is refused. An ``option_rules``
    attribute of the method (see :func:`check_options`) has its option values checked."""
    if name in _METHODS:
        raise ValueError(f"a method named {name!r} is registered already")
    _METHODS[name] = method


def method_names() -> list[str]:
    return sorted(_METHODS)


def get_method(method: str | Method) -> Method:
    """The method of a name, a training folder (:func:`trained_method`), or the method itself."""
    if callable(method):
        return method
    if method not in _METHODS and os.path.isdir(method):
        return trained_method(method)
    if method not in _METHODS:
        raise ValueError(f"no registration method {method!r}; known: {', '.join(method_names())}")
    return _METHODS[method]


def method_options(method: str | Method) -> set[str] | None:
    """The options a method takes (keyword arguments besides the pair); ``None`` for a method
    that takes any (``**options``)."""
    parameters = list(inspect.signature(get_method(method)).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters}


def takes_option(method: str | Method, option: str) -> bool:
    known = method_options(method)
    return known is None or option in known


def check_options(method: str | Method, options: dict) -> None:
    """Refuse, before any work, options the method does not take, and values its
    ``option_rules`` (a table of :class:`Rule` by option name, or by a tuple of names for
    a relation between options) refuse: one line naming the option, the value and what it
    must be. A method without a table gets only the first check."""
    function = get_method(method)
    unknown = sorted(o for o in options if not takes_option(function, o))
    if unknown:
        name = method if isinstance(method, str) else getattr(method, "__name__", "the method")
        raise ValueError(
            f"the method {name} takes no option {', '.join(unknown)}; it takes: "
            f"{', '.join(sorted(method_options(function)))}"
        )
    parameters = list(inspect.signature(function).parameters.values())[1:]
    values = {p.name: p.default for p in parameters if p.default is not p.empty} | options
    rules = getattr(function, "option_rules", {})
    # each option alone first, so that a relation sees values of the right kinds
    for names, rule in sorted(rules.items(), key=lambda item: not isinstance(item[0], str)):
        names = (names,) if isinstance(names, str) else names
        if not any(n in options for n in names):
            continue  # the defaults are valid
        given = [values.get(n) for n in names]
        if not rule.test(*given):
            got = ", ".join(
                reprlib.repr(v) if len(names) == 1 else f"{n}={reprlib.repr(v)}"
                for n, v in zip(names, given)
            )
            raise ValueError(f"{' and '.join(names)} must {rule.must}, got {got}")


@dataclass(frozen=True)
class Rule:
    """What an option's value must be (or the values of several, for a relation): ``test``
    takes the values, ``must`` says it, read after "levels must ..."."""

    must: str
    test: Callable[..., bool]


def _number(value, low, strict=False) -> bool:
    real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return real and math.isfinite(value) and (value > low if strict else value >= low)


def _integer(value, low) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low


def _device(value) -> bool:
    if value is None:
        return True
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        return False
    if device.type == "cuda":
        return torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if device.type == "mps":
        return torch.backends.mps.is_available()
    return device.type == "cpu"


def one_of(names, functions=False) -> Rule:
    listed = ", ".join(repr(n) for n in names)
    return Rule(
        f"be one of {listed}{' or a function' * functions}",
        lambda v: (isinstance(v, str) and v in names) or (functions and callable(v)),
    )


def similarity_of(names, functions=True) -> Rule:
    """``one_of`` for similarity names, which pass in any case (``losses.similarity_name``)."""

    def known(value):
        try:
            return (functions and callable(value)) or bool(losses.similarity_name(value, names))
        except ValueError:
            return False

    return Rule(one_of(names, functions).must, known)


def _per_level(noun, test) -> Rule:
    return Rule(
        f"be a non-empty tuple of {noun}, one per level",
        lambda v: isinstance(v, (tuple, list)) and len(v) > 0 and all(test(x) for x in v),
    )


INTEGER_FROM_0 = Rule("be an integer >= 0", lambda v: _integer(v, 0))
INTEGER_FROM_1 = Rule("be an integer >= 1", lambda v: _integer(v, 1))
POSITIVE = Rule("be a number > 0", lambda v: _number(v, 0, strict=True))
NON_NEGATIVE = Rule("be a number >= 0", lambda v: _number(v, 0))
FLAG = Rule("be True or False", lambda v: isinstance(v, bool))
DEVICE = Rule("be None, 'cpu' or an available GPU ('cuda', 'cuda:N', 'mps')", _device)
# shrink factors: a factor beyond the image's size gives the coarsest grid, 2 voxels an axis
LEVELS = _per_level("numbers >= 1 (shrink factors)", lambda x: _number(x, 1))
ITERATIONS = _per_level("integers >= 1", lambda x: _integer(x, 1))
SAME_LENGTH = Rule("have the same length", lambda a, b: len(a) == len(b))
MODALITY = Rule("be None, 'ct' or 'mri'", lambda v: v is None or one_of(("ct", "mri")).test(v))
COMMON_RULES = {"device": DEVICE, "progress": FLAG}
PYRAMID_RULES = {"levels": LEVELS, "iterations": ITERATIONS, ("levels", "iterations"): SAME_LENGTH}


def run_method(
    method: str | Method,
    pair: Pair,
    initial: Transform | None = None,
    initial_inverse: Transform | None = None,
    **options,
) -> OptimizationResult:
    """Register ``pair`` with ``method`` (a name or a callable), started from ``initial``.

    ``initial`` maps the fixed cube to the moving cube (an imported ITK transform, a previous
    step's result). The method then registers the fixed image to the moving image carried
    onto the fixed grid by ``initial``, and the result is ``initial`` followed by the method's
    map: ``forward = initial @ map`` and ``backward = map_inverse @ initial_inverse``.
    ``initial_inverse`` defaults to :func:`~itkdeepreg.transforms.invert` of ``initial``.
    """
    function = get_method(method)
    check_options(method, options)
    if initial is None:
        return function(pair, **options)
    if initial_inverse is None:
        initial_inverse = invert(initial)
    result = function(pair.through(initial), **options)
    return OptimizationResult(
        initial @ result.forward, result.backward @ initial_inverse, result.losses
    )


def _masks(pair, device):
    return {
        f"{side}_mask": None if mask is None else mask.to(device)
        for side, mask in (("moving", pair.moving_mask), ("fixed", pair.fixed_mask))
    }


def _linear(transform):
    def affine_method(
        pair: Pair,
        similarity="ncc",
        initialization="center_of_mass",
        levels=(4, 2, 1),
        iterations=(100, 50, 25),
        learning_rate=0.01,
        device=None,
        progress=True,
    ) -> OptimizationResult:
        device = device or pair.fixed.device
        return register_affine(
            pair.segmented("moving").to(device),
            pair.segmented("fixed").to(device),
            pair.moving_geometry,
            pair.fixed_geometry,
            transform=transform,
            similarity=losses.named_similarity(similarity),
            initialization=initialization,
            levels=levels,
            iterations=iterations,
            learning_rate=learning_rate,
            progress=progress,
            **_masks(pair, device),
        )

    affine_method.__name__ = transform
    affine_method.__doc__ = f"{transform.capitalize()} registration by optimization."
    affine_method.option_rules = {
        "similarity": similarity_of(SIMILARITIES),
        "initialization": one_of(INITIALIZATIONS),
        **PYRAMID_RULES,
        "learning_rate": POSITIVE,
        **COMMON_RULES,
    }
    return affine_method


# the deformable defaults were tuned with a 1.5-voxel LNCC window (the networks' is 5)
_DEFORMABLE_SIMILARITIES = {
    **SIMILARITIES,
    "lncc": functools.partial(losses.lncc, sigma=1.5),
    "squared_lncc": functools.partial(losses.squared_lncc, sigma=1.5),
}


def deformable(
    pair: Pair,
    similarity="squared_lncc",
    parameterization="velocity",
    symmetric=False,
    regularization=None,
    levels=(4, 2, 1),
    iterations=(50, 25, 40),
    learning_rate=0.25,
    decay_to=0.1,
    field_factor=2,
    smoothing=2.5,
    seed=0,
    device=None,
    progress=True,
) -> OptimizationResult:
    """Deformable registration by optimization: :func:`~itkdeepreg.optimize.register_deformable`."""
    device = device or pair.fixed.device
    return register_deformable(
        pair.segmented("moving").to(device),
        pair.segmented("fixed").to(device),
        similarity=losses.named_similarity(similarity, _DEFORMABLE_SIMILARITIES),
        parameterization=parameterization,
        symmetric=symmetric,
        regularization=regularization,
        levels=levels,
        iterations=iterations,
        learning_rate=learning_rate,
        decay_to=decay_to,
        field_factor=field_factor,
        smoothing=smoothing,
        seed=seed,
        progress=progress,
        **_masks(pair, device),
    )


def _regularization(value) -> bool:
    return value is None or (
        isinstance(value, dict)
        and all(n in REGULARIZERS and _number(w, 0) for n, w in value.items())
    )


deformable.option_rules = {
    "similarity": similarity_of(_DEFORMABLE_SIMILARITIES),
    "parameterization": one_of(PARAMETERIZATIONS),
    "symmetric": FLAG,
    "regularization": Rule(
        f"be None or a dict of weights >= 0 by name, of {', '.join(map(repr, REGULARIZERS))}",
        _regularization,
    ),
    **PYRAMID_RULES,
    "learning_rate": POSITIVE,
    "decay_to": Rule("be a number from 0 to 1", lambda v: _number(v, 0) and v <= 1),
    # the field's grid is made this many times coarser than the level's
    "field_factor": Rule("be a number >= 1", lambda v: _number(v, 1)),
    "smoothing": NON_NEGATIVE,
    "seed": INTEGER_FROM_0,
    **COMMON_RULES,
    # inverse consistency needs the backward map that only the symmetric variant optimises
    ("regularization", "symmetric"): Rule(
        "weigh 'gradicon' or 'icon' only with symmetric=True",
        lambda r, symmetric: symmetric or not {"gradicon", "icon"} & set(r or {}),
    ),
}


def affine_deformable(
    pair: Pair,
    multimodal=False,
    affine=None,
    deformable=None,
    device=None,
    progress=True,
) -> OptimizationResult:
    """An affine stage, then deformable registration from its result: the method to start with
    for two arbitrary images, as ``antsRegistrationSyN.sh`` is in ANTs.

    ``multimodal``: the images have different contrasts (T1 and T2, say): the affine stage
    compares them by mutual information, on the two coarser levels only (its dense Parzen
    histogram costs ten times NCC's at full resolution, and the deformable stage refines),
    and the deformable stage by normalised gradient fields; by default they use NCC and
    squared LNCC. ``affine`` and ``deformable``: options of the two stages (those of the
    ``"affine"`` and ``"deformable"`` methods), over these defaults.
    """
    stages = _stage_options(multimodal, affine, deformable)
    common = {"device": device, "progress": progress}
    first = run_method("affine", pair, **{**stages["affine"], **common})
    second = run_method(
        "deformable",
        pair,
        initial=first.forward,
        initial_inverse=first.backward,
        **{**stages["deformable"], **common},
    )
    return OptimizationResult(second.forward, second.backward, first.losses + second.losses)


def _stage_options(multimodal, affine, deformable) -> dict:
    """The options of affine-deformable's stages by method: its defaults, then those given."""
    affine_options = (
        {"similarity": "mutual_information", "levels": (4, 2), "iterations": (50, 25)}
        if multimodal
        else {"similarity": "ncc"}
    )
    deformable_options = {"similarity": "ngf" if multimodal else "squared_lncc"}
    return {
        "affine": {**affine_options, **(affine or {})},
        "deformable": {**deformable_options, **(deformable or {})},
    }


def _valid_stages(multimodal, affine, deformable) -> bool:
    """Both stages' options pass their methods' checks: the second stage's too, before the
    first one runs."""
    for stage, options in _stage_options(multimodal, affine, deformable).items():
        try:
            check_options(stage, options)
        except ValueError as error:
            raise ValueError(f"{stage}: {error}") from None
    return True


def _stage_rule(stage) -> Rule:
    return Rule(
        f"be None or a dict of options of the {stage} method",
        lambda v: v is None or isinstance(v, dict),
    )


affine_deformable.option_rules = {
    "multimodal": FLAG,
    "affine": _stage_rule("affine"),
    "deformable": _stage_rule("deformable"),
    ("multimodal", "affine", "deformable"): Rule("be valid options", _valid_stages),
    **COMMON_RULES,
}


def nephi(
    pair: Pair,
    similarity="patch_ncc",
    iterations=300,
    learning_rate=1e-4,
    points=2048,
    weight=10.0,
    seed=0,
    device=None,
    progress=True,
) -> OptimizationResult:
    """NePhi pairwise optimization: :func:`~itkdeepreg.optimize.nephi.register_nephi`."""
    from .optimize.nephi import register_nephi

    if pair.moving_mask is not None or pair.fixed_mask is not None:
        raise ValueError("nephi takes no masks")
    device = device or pair.fixed.device
    return register_nephi(
        pair.segmented("moving").to(device),
        pair.segmented("fixed").to(device),
        similarity=losses.similarity_name(similarity, NEPHI_SIMILARITIES),
        iterations=iterations,
        learning_rate=learning_rate,
        points=points,
        weight=weight,
        seed=seed,
        progress=progress,
    )


nephi.option_rules = {
    "similarity": similarity_of(NEPHI_SIMILARITIES, functions=False),
    "iterations": INTEGER_FROM_1,
    "learning_rate": POSITIVE,
    "points": INTEGER_FROM_1,
    "weight": NON_NEGATIVE,
    "seed": INTEGER_FROM_0,
    **COMMON_RULES,
}


MAP_FORMS = ("field", "chain")  # a network's answer: held as written, or its exact chain


class NetworkMethod:
    """A registration network on its grid, with the published preprocessing.

    ``network``: the model (a :class:`torch.nn.Module` whose call gives a transform value) or a
    function that builds it; ``shape``: the grid its images are resampled to; ``weights``: a
    :class:`~itkdeepreg.zoo.WeightsSource` (downloaded into the cache on first use), a path,
    or ``None`` to use the model as it is; ``modality``: the default of both images;
    ``preprocessing``: the network's published intensity recipe, ``preprocessing(image,
    modality, segmentation)`` (uniGradICON's by default); ``placement``: how the grid is put
    on each image by default (:data:`~itkdeepreg.geometry.PLACEMENTS`).

    Each image is preprocessed for its modality (``ct_window``, ``quantile_range``; times its
    mask with ``input_masking``), then resampled onto ``shape``; the network gives both
    directions in one pass. Instance optimization (``io_iterations`` > 0) refines them:
    ``io_kind="fields"`` optimises residual fields on the network's answer (the path for a
    CPU), ``"weights"`` the network's weights, as published; both with the published terms
    (``loss_masking``, ``dice_weight``, ``intensity_conservation``), and masks and
    segmentations used by ``unigradicon-register``'s rules (docs/command_line.md). The model
    is loaded once per weights file and device, and never changed.

    Two options say how the answer relates to the images (docs/models.md):

    - ``placement``: ``"extent"`` (the published networks' default) spreads the grid's cells
      over each image's extent, as the published code resizes; ``"corners"`` puts the grid's
      corner voxels on the image's corner voxels (how our training resamples, so the default
      of trained folders). ``None``: the method's own.
    - ``map_form``: ``"field"`` (default) holds each map as the published code writes it, one
      displacement field sampled at the grid's voxels between the two placements (ITK's rule
      off the grid); ``"chain"`` keeps the network's exact composition of its steps' fields
      (a larger transform file). What is applied is, in either case, what is written.
    """

    option_rules: ClassVar[dict] = {
        "fixed_modality": MODALITY,
        "moving_modality": MODALITY,
        "weights": Rule(
            "be None, a WeightsSource or the path of a file",
            lambda v: (
                v is None
                or isinstance(v, W.WeightsSource)
                or (isinstance(v, (str, os.PathLike)) and os.path.isfile(v))
            ),
        ),
        "io_iterations": INTEGER_FROM_0,
        "io_kind": one_of(("fields", "weights")),
        "similarity": similarity_of(SIMILARITIES),
        "learning_rate": Rule("be None or a number > 0", lambda v: v is None or POSITIVE.test(v)),
        "placement": Rule(
            f"be None or one of {', '.join(map(repr, PLACEMENTS))}",
            lambda v: v is None or one_of(PLACEMENTS).test(v),
        ),
        "map_form": one_of(MAP_FORMS),
        "input_masking": FLAG,
        "loss_masking": FLAG,
        "dice_weight": NON_NEGATIVE,
        "intensity_conservation": FLAG,
        "ct_window": Rule(
            "be None or two numbers, the lower first (Hounsfield units)",
            lambda v: v is None or _pair_of(v, lambda low, high: low < high),
        ),
        "quantile_range": Rule(
            "be None or two quantiles from 0 to 1, the lower first",
            lambda v: v is None or _pair_of(v, lambda low, high: 0 <= low < high <= 1),
        ),
        # a step in residual-field voxels: 2e-5, the published rate for weights, moves nothing
        ("io_kind", "learning_rate"): Rule(
            "be 'weights' for a learning rate below 1e-3 (with 'fields' it is a step in "
            "voxels of the residual field)",
            lambda kind, rate: kind == "weights" or rate is None or rate >= 1e-3,
        ),
        **COMMON_RULES,
    }

    def __init__(
        self,
        network,
        shape,
        weights=None,
        modality="mri",
        preprocessing=preprocess,
        placement="extent",
    ):
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
        self.network = network
        self.shape = tuple(shape)
        self.weights = weights
        self.modality = modality
        self.preprocessing = preprocessing
        self.placement = placement

    def __call__(
        self,
        pair: Pair,
        fixed_modality=None,
        moving_modality=None,
        weights=None,
        io_iterations=0,
        io_kind="fields",
        similarity="lncc",
        learning_rate=None,
        input_masking=False,
        loss_masking=False,
        dice_weight=0.0,
        intensity_conservation=False,
        ct_window=None,
        quantile_range=None,
        placement=None,
        map_form="field",
        device=None,
        progress=True,
    ) -> OptimizationResult:
        modalities = {
            "moving": moving_modality or self.modality,
            "fixed": fixed_modality or self.modality,
        }
        _check_windows(modalities, ct_window, quantile_range, intensity_conservation)
        masks, input_masking = _published_masks(pair, input_masking, loss_masking, dice_weight)
        if len(self.shape) != pair.fixed.dim() - 2:
            raise ValueError(
                f"the network registers {len(self.shape)}D images, got {pair.fixed.dim() - 2}D"
            )
        device = torch.device(device) if device else pair.fixed.device
        model = self._model(weights if weights is not None else self.weights, device, progress)
        # each side's model-grid cube -> its image's cube; None where they are one cube
        placed = {
            side: _placement(
                getattr(pair, f"{side}_geometry"), self.shape, placement or self.placement
            )
            for side in ("moving", "fixed")
        }
        # only the windows given are passed: a network's own preprocessing may take neither
        windows = {
            name: tuple(value)
            for name, value in (("ct_window", ct_window), ("quantile_range", quantile_range))
            if value is not None
        }
        moving, fixed = (
            _onto_model_grid(
                self.preprocessing(
                    getattr(pair, side),
                    modalities[side],
                    masks[side] if input_masking else None,
                    **windows,
                ),
                self.shape,
                placed[side],
            ).to(device)
            for side in ("moving", "fixed")
        )
        result = OptimizationResult(*register_pair(model, moving, fixed, inverse=True))
        if io_iterations:
            options = {"similarity": losses.named_similarity(similarity), "progress": progress}
            if learning_rate is not None:
                options["learning_rate"] = learning_rate

            def on_grid(image, side):  # a mask or label map on the network's grid
                return _onto_model_grid(
                    image.to(device, torch.float32).trunc(), self.shape, placed[side], "nearest"
                )

            terms = {"intensity_conservation": intensity_conservation}
            for side in ("moving", "fixed") if loss_masking else ():
                # the published similarity counts where the mask is non-zero
                terms[f"{side}_mask"] = (on_grid(masks[side], side) != 0).float()
            if dice_weight:
                terms["dice_weight"] = dice_weight
                for side in ("moving", "fixed"):
                    labels = getattr(pair, f"{side}_segmentation")
                    terms[f"{side}_labels"] = on_grid(labels, side)
            if io_kind == "weights":
                result = optimize_weights(model, moving, fixed, io_iterations, **options, **terms)
            else:
                result = optimize_fields(
                    result.forward, result.backward, moving, fixed, io_iterations,
                    **options, **terms,
                )  # fmt: skip
        forward, backward = result.forward, result.backward
        if map_form == "field":  # as published: one field each, at the grid's voxels
            forward, backward = (_held_on_grid(m, self.shape) for m in (forward, backward))
        if placed["fixed"] is not None:  # from the images' cubes to the grid's and back
            to_fixed, to_moving = placed["fixed"], placed["moving"]
            forward = to_moving @ forward @ to_fixed.inverse()
            backward = to_fixed @ backward @ to_moving.inverse()
        return OptimizationResult(forward, backward, result.losses)

    def build(self, weights=None, progress=True) -> nn.Module:
        """A new model with ``weights`` (default: the method's own), on the CPU: what
        fine-tuning starts from."""
        model = self._model(weights if weights is not None else self.weights, "cpu", progress)
        return copy.deepcopy(model)

    def _model(self, weights, device, progress) -> nn.Module:
        if isinstance(weights, W.WeightsSource):
            weights = W.fetch(weights, progress=progress)
        if weights is not None:  # a file rewritten in place is read again
            weights = os.path.abspath(weights)
            return _load(self.network, (weights, os.stat(weights).st_mtime_ns), device)
        return _load(self.network, None, device)


def _pair_of(value, test) -> bool:
    return (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(_number(v, -math.inf) for v in value)
        and test(*value)
    )


def _check_windows(modalities, ct_window, quantile_range, intensity_conservation):
    """Refuse a window for a modality neither image has, and intensity conservation of
    anything but two CTs (it takes -1000 HU, air, as no mass)."""
    for option, value, modality in (
        ("ct_window", ct_window, "ct"),
        ("quantile_range", quantile_range, "mri"),
    ):
        if value is not None and modality not in modalities.values():
            name = modality.upper()
            raise ValueError(f"{option} scales {name} images, and neither image is {name}")
    if intensity_conservation and set(modalities.values()) != {"ct"}:
        raise ValueError(
            "intensity_conservation needs two CT images (fixed and moving modality ct)"
        )


def _published_masks(pair, input_masking, loss_masking, dice_weight):
    """The masks a network uses, by ``unigradicon-register``'s rules, and whether it masks its
    inputs: ``({"moving": mask, "fixed": mask}, input_masking)``.

    Masks are used only as ``input_masking`` and ``loss_masking`` say, and need both sides;
    segmentations are the Dice term's labels. The published fallback, deprecated there: both
    segmentations and no mask, no Dice term, and loss masking or no input masking: the
    segmentations are the masks, and mask the inputs unless loss masking was asked.
    """
    masks = {"moving": pair.moving_mask, "fixed": pair.fixed_mask}
    segmentations = {"moving": pair.moving_segmentation, "fixed": pair.fixed_segmentation}
    have_masks = [m is not None for m in masks.values()]
    have_segmentations = [s is not None for s in segmentations.values()]
    if (
        not any(have_masks)
        and all(have_segmentations)
        and not dice_weight
        and (loss_masking or not input_masking)
    ):
        warnings.warn(
            "segmentations used as masks (as unigradicon-register 1.0.6 does, deprecated "
            "there): give masks for input or loss masking, and segmentations for the Dice term",
            DeprecationWarning,
            stacklevel=3,
        )
        return segmentations, input_masking or not loss_masking
    if (input_masking or loss_masking) and not all(have_masks):
        raise ValueError("input masking and loss masking need both a fixed and a moving mask")
    if dice_weight and not all(have_segmentations):
        raise ValueError(
            "the Dice term (dice_weight > 0) needs both a fixed and a moving segmentation"
        )
    if any(have_segmentations) and not dice_weight:
        raise ValueError(
            "a network takes segmentations for the Dice term (dice_weight > 0), or both as "
            "masks (deprecated): give both, or give masks"
        )
    if any(have_masks) and not (input_masking or loss_masking):
        warnings.warn(
            "the masks are not used: a network masks with input_masking and loss_masking "
            "(--input-masking, --loss-masking), as unigradicon-register does",
            stacklevel=3,
        )
    return masks, input_masking


def _placement(geometry: ImageGeometry, shape, placement) -> Affine | None:
    """The model grid's unit cube -> the image's (``ImageGeometry.placed_to_unit``); ``None``
    where they are the same cube."""
    if placement == "corners":
        return None
    return Affine(torch.from_numpy(geometry.placed_to_unit(shape, placement)))


def _onto_model_grid(image, shape, placement: Affine | None, mode="linear"):
    """``image`` at the voxels of the model grid placed on it (border values beyond its edge,
    as ``F.interpolate`` gives them)."""
    if placement is None:
        return resample(image, shape, mode=mode)
    grid = identity_grid(shape, dtype=torch.float64, device=image.device)
    return sample(image, placement(grid).to(image.dtype), mode=mode, padding="border")


def _held_on_grid(transform: Transform, shape) -> Displacement:
    """``transform`` sampled at the voxels of a grid of ``shape``, one displacement field read
    by ITK's rule off the grid: what the published code writes of a network's map."""
    with torch.no_grad():
        return Displacement(transform.as_displacement(shape).displacement, outside="itk")


@functools.lru_cache(maxsize=2)
def _load(network, weights, device):
    """A model (a copy of a given one) with its weights, ``(path, mtime)``, on ``device``;
    the last two asked for stay loaded."""
    model = copy.deepcopy(network) if isinstance(network, nn.Module) else network()
    if weights is not None:
        W.load_weights(model, weights[0])
    return model.to(device)


def models_loaded() -> int:
    """How many models this process has built and loaded: a batch's worker loads a network
    once, for all its pairs (docs/batch.md)."""
    return _load.cache_info().misses


def trained_method(folder) -> NetworkMethod:
    """The network a training run wrote into ``folder`` (``itkdeepreg train``: its
    ``config.toml`` and ``weights.pt``) as a method, on the grid and modality it was trained
    with."""
    folder = os.path.abspath(folder)
    config, weights = os.path.join(folder, "config.toml"), os.path.join(folder, "weights.pt")
    for path in (config, weights):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{folder} is not a trained model: it has no {path}")
    return _trained_method(config, weights, os.stat(config).st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _trained_method(config, weights, config_time) -> NetworkMethod:
    """One method per run and configuration, so that its loaded model is kept (``_load``)."""
    try:
        with open(config, "rb") as file:
            model = tomllib.load(file)["model"]
        method, shape, modality = model.get("method", ""), model["shape"], model["modality"]
    except (tomllib.TOMLDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{config} is not a training run's configuration ({error})") from None
    if method:  # fine-tuned: the network it started from, with the new weights
        tuned = get_method(method)
        return NetworkMethod(  # trained on images resampled corner to corner
            tuned.network,
            tuned.shape,
            weights,
            modality or tuned.modality,
            tuned.preprocessing,
            placement="corners",
        )
    return NetworkMethod(
        functools.partial(network_from_config, model), shape, weights, modality, placement="corners"
    )


for _transform in ("translation", "rigid", "affine"):
    register_method(_transform, _linear(_transform))
register_method("deformable", deformable)
register_method("affine-deformable", affine_deformable)
register_method("nephi", nephi)
register_method(
    "unigradicon", NetworkMethod(Z.unigradicon_network, Z.UNIGRADICON_SHAPE, W.UNIGRADICON)
)
register_method(
    "multigradicon", NetworkMethod(Z.unigradicon_network, Z.UNIGRADICON_SHAPE, W.MULTIGRADICON)
)
register_method(
    "gradicon-lung",
    NetworkMethod(
        Z.gradicon_lung_network,
        Z.GRADICON_LUNG_SHAPE,
        W.GRADICON_LUNG,
        "ct",
        preprocess_gradicon_lung,
    ),
)
register_method(
    "gradicon-knee", NetworkMethod(Z.gradicon_knee_network, Z.GRADICON_KNEE_SHAPE, W.GRADICON_KNEE)
)
register_method(
    "gradicon-brain",
    NetworkMethod(
        Z.gradicon_brain_network,
        Z.GRADICON_BRAIN_SHAPE,
        W.GRADICON_BRAIN,
        preprocessing=preprocess_gradicon_brain,
    ),
)
# the models of our own: training folders shipped in the package (docs/training.md)
for _model in OWN_MODELS:
    register_method(_model, trained_method(os.path.join(OWN_MODELS_FOLDER, _model)))
