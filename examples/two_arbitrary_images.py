"""The method to start with for two arbitrary images: an affine stage, then a deformable one.

Two 2D pairs of the project's benchmark with known answers: one whose moving image is also
rotated, scaled and shifted (the ``affine`` regime), and one whose moving image has another
contrast (``contrast``: T2-like against T1), registered the ITK way with
``method="affine-deformable"`` (``multimodal=True`` for the second) and scored against the
true map.
"""

import itk

import itkdeepreg  # adds itk.deep_registration_method
from itkdeepreg.data.brain_pairs import brain_pair


def main():
    scores = {}
    for regime, options in (("affine", {}), ("contrast", {"multimodal": True})):
        pair = brain_pair(seed=5, dimension=2, regime=regime)
        fixed, moving = pair.itk_images()
        _, transform = itk.deep_registration_method(
            fixed, moving, method="affine-deformable", show_progress=False, **options
        )
        before = pair.score(itkdeepreg.Affine.identity(2))
        after = pair.score(transform.forward)
        print(
            f"{regime:9} Dice {before['dice']:.3f} -> {after['dice']:.3f}, "
            f"error {before['error']:5.2f} -> {after['error']:.2f} mm, folds {after['folds']:.2f} %"
        )
        scores[regime] = before, after
    return scores


if __name__ == "__main__":
    main()
