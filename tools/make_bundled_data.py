"""Make the images bundled in itkdeepreg/data from the MNI152 2009a template in ../shared.

Run once by a maintainer (tests and examples read only the bundled copies):

    python tools/make_bundled_data.py ../shared/data/mni152_2009a
"""

import sys
from pathlib import Path

import itk
import numpy as np

SPACING = 2.0  # millimetres: 197x233x189 at 1 mm becomes 99x117x95


def downsample(image, spacing):
    """Gaussian anti-aliasing (sigma of half the new spacing), then linear resampling."""
    blurred = itk.smoothing_recursive_gaussian_image_filter(
        image.astype(itk.F), sigma=0.5 * spacing
    )
    old_size = np.asarray(image.GetLargestPossibleRegion().GetSize())
    old_spacing = np.asarray(image.GetSpacing())
    size = np.round((old_size - 1) * old_spacing / spacing).astype(int) + 1
    resampled = itk.resample_image_filter(
        blurred,
        size=size.tolist(),
        output_spacing=[spacing] * 3,
        output_origin=image.GetOrigin(),
        output_direction=image.GetDirection(),
    )
    array = np.clip(np.rint(itk.array_view_from_image(resampled)), 0, 255).astype(np.uint8)
    result = itk.image_from_array(array)
    result.CopyInformation(resampled)
    return result


def main(source):
    source, target = Path(source), Path(__file__).resolve().parents[1] / "itkdeepreg" / "data"
    for name in ("t1", "gm", "wm"):  # the T1 image and the grey and white matter maps
        image = itk.imread(str(source / f"{name}.nii.gz"))
        written = str(target / f"mni152_{name}_2mm.nii.gz")
        itk.imwrite(downsample(image, SPACING), written, compression=True)
    notice = (source / "NOTICE.md").read_text()
    derived = (
        "\n`mni152_t1_2mm.nii.gz`, `mni152_gm_2mm.nii.gz` and `mni152_wm_2mm.nii.gz` here are\n"
        "derived from `t1.nii.gz`, `gm.nii.gz` and `wm.nii.gz` by `tools/make_bundled_data.py`:\n"
        f"Gaussian smoothing (sigma {0.5 * SPACING} mm) and linear resampling to {SPACING} mm.\n"
    )
    (target / "NOTICE.md").write_text(notice + derived)


if __name__ == "__main__":
    main(sys.argv[1])
