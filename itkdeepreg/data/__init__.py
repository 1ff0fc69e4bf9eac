"""Images bundled with itkdeepreg; NOTICE.md beside them says where they come from."""

from pathlib import Path

DIRECTORY = Path(__file__).parent


def mni152_t1_2mm() -> str:
    """Path of the MNI ICBM152 2009a T1 template at 2 mm (99x117x95, uint8)."""
    return str(DIRECTORY / "mni152_t1_2mm.nii.gz")


def mni152_gm_2mm() -> str:
    """Path of the template's grey-matter probability map at 2 mm (uint8, 255 = certain)."""
    return str(DIRECTORY / "mni152_gm_2mm.nii.gz")


def mni152_wm_2mm() -> str:
    """Path of the template's white-matter probability map at 2 mm (uint8, 255 = certain)."""
    return str(DIRECTORY / "mni152_wm_2mm.nii.gz")
