"""Training pairs from image files (itkdeepreg.train.data): files, folders, CSV files, the
preprocessing, bad images and the cache. Every test writes its own small images in tmp_path."""

import os
import re

import itk
import numpy as np
import pytest
import torch

from itkdeepreg.train import data
from itkdeepreg.train.data import ImagePairs
from itkdeepreg.zoo import preprocess_gradicon_lung

ARRAY_2D = (10, 12)  # array axes (y, x): an image 12 x 10
ARRAY_3D = (6, 8, 8)  # array axes (z, y, x)


def write_image(path, array):
    """``array`` written as a float32 ITK image at ``path``; returns the path."""
    itk.imwrite(itk.image_from_array(np.asarray(array, dtype=np.float32)), str(path))
    return path


def random_array(shape, seed=0):
    """Non-constant intensities, different for each seed."""
    return 100 * np.random.default_rng(seed).random(shape)


def write_images(folder, names, shape=ARRAY_2D):
    """A random image at each of ``names`` under ``folder`` (subfolders made as needed)."""
    paths = []
    for seed, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        paths.append(write_image(path, random_array(shape, seed)))
    return paths


def write_csv(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def many_draws(pairs, count=300, seed=0):
    return pairs.draw(count, seeded(seed))


# from_files


@pytest.mark.parametrize(
    "array_shape, grid", [(ARRAY_2D, (16, 16)), (ARRAY_3D, (4, 6, 5))], ids=["2D", "3D"]
)
def test_from_files_samples_float32_batches_in_unit_range_on_the_grid(tmp_path, array_shape, grid):
    """A batch is [B, 1, *grid] float32 in [0, 1], whatever the images' own size."""
    paths = write_images(tmp_path, ["a.mha", "b.nii.gz", "c.nrrd"], array_shape)
    pairs = ImagePairs.from_files(paths, grid)
    moving, fixed = pairs.sample(5, seeded(0))
    for batch in (moving, fixed):
        assert batch.shape == (5, 1, *grid)
        assert batch.dtype == torch.float32
        assert batch.min() >= 0 and batch.max() <= 1
        assert batch.max() > batch.min()


def test_the_same_seed_gives_the_same_batch_and_another_seed_another_draw(tmp_path):
    """Draws come from the generator alone; sample loads exactly what draw returns."""
    pairs = ImagePairs.from_files(
        write_images(tmp_path, ["a.mha", "b.mha", "c.mha", "d.mha"]), ARRAY_2D, pairing="any"
    )
    first, again = pairs.sample(6, seeded(7)), pairs.sample(6, seeded(7))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert pairs.draw(6, seeded(7)) != pairs.draw(6, seeded(8))
    drawn = pairs.draw(6, seeded(7))
    assert torch.equal(first[0], torch.stack([pairs.image(m) for m, _ in drawn]))
    assert torch.equal(first[1], torch.stack([pairs.image(f) for _, f in drawn]))


def test_each_file_is_its_own_subject_and_construction_checks_its_arguments(tmp_path):
    """from_files: one subject per file; bad shapes, batch sizes and lists are refused."""
    paths = write_images(tmp_path, ["a.mha", "b.mha"])
    pairs = ImagePairs.from_files(paths, ARRAY_2D)
    assert len(pairs) == 2 and len(set(pairs.subjects)) == 2
    with pytest.raises(ValueError, match="shape"):
        ImagePairs.from_files(paths, (10,))
    with pytest.raises(ValueError, match="shape"):
        ImagePairs.from_files(paths, (10, 1))
    with pytest.raises(ValueError, match="no images"):
        ImagePairs.from_files([], ARRAY_2D)
    with pytest.raises(ValueError, match="batch_size"):
        pairs.draw(0, seeded(0))


# from_folder


@pytest.fixture
def subject_folder(tmp_path):
    """Two subject folders (images at any depth), a loose image, and things to skip."""
    root = tmp_path / "images"
    write_images(
        root,
        [
            "subject_a/one.mha",
            "subject_a/deeper/two.nii.gz",
            "subject_a/.hidden.mha",
            "subject_a/.hidden_folder/three.mha",
            "subject_b/one.mha",
            "subject_b/two.nrrd",
            "loose.mha",
            ".hidden_loose.mha",
            ".hidden_subject/one.mha",
            ".hidden_subject/two.mha",
        ],
    )
    (root / "subject_a" / "notes.txt").write_text("not an image")
    (root / "readme.md").write_text("not an image")
    (root / "no_images").mkdir()
    (root / "no_images" / "table.csv").write_text("a,b\n")
    return root


def subjects_by_image(pairs, root):
    return {path.relative_to(root).as_posix(): s for path, s in zip(pairs.paths, pairs.subjects)}


def test_from_folder_subfolders_are_subjects_and_loose_images_their_own(subject_folder):
    """Images at any depth of a subfolder are that subject's; hidden and other files skipped."""
    pairs = ImagePairs.from_folder(subject_folder, ARRAY_2D)
    assert subjects_by_image(pairs, subject_folder) == {
        "loose.mha": "loose.mha",
        "subject_a/deeper/two.nii.gz": "subject_a",
        "subject_a/one.mha": "subject_a",
        "subject_b/one.mha": "subject_b",
        "subject_b/two.nrrd": "subject_b",
    }


def test_inter_pairing_never_draws_two_images_of_one_subject(subject_folder):
    pairs = ImagePairs.from_folder(subject_folder, ARRAY_2D, pairing="inter")
    drawn = many_draws(pairs)
    assert all(pairs.subjects[m] != pairs.subjects[f] for m, f in drawn)
    assert {pairs.subjects[m] for m, _ in drawn} == set(pairs.subjects)


def test_intra_pairing_always_draws_two_different_images_of_one_subject(subject_folder):
    pairs = ImagePairs.from_folder(subject_folder, ARRAY_2D, pairing="intra")
    drawn = many_draws(pairs)
    assert all(m != f and pairs.subjects[m] == pairs.subjects[f] for m, f in drawn)
    # the loose image (a subject with one image) is never drawn; both other subjects are
    assert {pairs.subjects[m] for m, _ in drawn} == {"subject_a", "subject_b"}


def test_any_pairing_never_draws_one_image_twice(subject_folder):
    pairs = ImagePairs.from_folder(subject_folder, ARRAY_2D, pairing="any")
    drawn = many_draws(pairs)
    assert all(m != f for m, f in drawn)
    assert any(pairs.subjects[m] == pairs.subjects[f] for m, f in drawn)
    assert {index for pair in drawn for index in pair} == set(range(len(pairs)))


def test_from_folder_errors(tmp_path):
    """Missing, empty or image-less folders and impossible pairings are refused clearly."""
    with pytest.raises(FileNotFoundError, match="no such folder"):
        ImagePairs.from_folder(tmp_path / "missing", ARRAY_2D)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        ImagePairs.from_folder(tmp_path / "empty", ARRAY_2D)
    write_images(tmp_path / "only_hidden", [".a.mha", ".subject/b.mha"])
    (tmp_path / "only_hidden" / "notes.txt").write_text("text")
    with pytest.raises(ValueError, match="no image files"):
        ImagePairs.from_folder(tmp_path / "only_hidden", ARRAY_2D)
    not_a_folder = write_image(tmp_path / "file.mha", random_array(ARRAY_2D))
    with pytest.raises(NotADirectoryError):
        ImagePairs.from_folder(not_a_folder, ARRAY_2D)

    write_images(tmp_path / "loose", ["a.mha", "b.mha"])
    with pytest.raises(ValueError, match="'intra' needs a subject with two images"):
        ImagePairs.from_folder(tmp_path / "loose", ARRAY_2D, pairing="intra")
    write_images(tmp_path / "one_subject", ["subject/a.mha", "subject/b.mha"])
    with pytest.raises(ValueError, match="'inter' needs images of at least two subjects"):
        ImagePairs.from_folder(tmp_path / "one_subject", ARRAY_2D, pairing="inter")
    with pytest.raises(ValueError, match="pairing must be one of"):
        ImagePairs.from_folder(tmp_path / "loose", ARRAY_2D, pairing="sometimes")


# from_csv


def test_from_csv_image_form_resolves_paths_against_the_csv_folder(tmp_path, monkeypatch):
    """``image,subject,modality``: relative paths from the CSV's folder, not the working one;
    an empty subject is a subject of its own; the header's case and extra columns don't matter."""
    folder = tmp_path / "study"
    a, b, c = write_images(folder, ["scans/a.mha", "scans/b.mha", "c.mha"])
    csv_path = write_csv(
        folder / "images.csv",
        [
            "Image,Subject,Modality,Comment",
            "scans/a.mha,patient1,ct,first",
            "",
            f"{b},patient1,,absolute path",
            "c.mha,,MRI,",
        ],
    )
    monkeypatch.chdir(tmp_path)
    pairs = ImagePairs.from_csv(csv_path, ARRAY_2D, modality="ct", pairing="intra")
    assert pairs.paths == [a, b, c]
    assert pairs.subjects == ["patient1", "patient1", str(c)]
    assert pairs.modalities == ["ct", "ct", "mri"]
    assert set(many_draws(pairs, 50)) == {(0, 1), (1, 0)}


def test_from_csv_pair_form_draws_only_the_listed_pairs(tmp_path):
    """``moving,fixed``: only listed pairs are drawn; an image in several rows is one image."""
    write_images(tmp_path, ["a.mha", "b.mha", "c.mha", "d.mha"])
    csv_path = write_csv(
        tmp_path / "pairs.csv",
        [
            "moving,fixed,fixed_modality",
            "a.mha,b.mha,",
            "b.mha,c.mha,ct",
            "c.mha,a.mha,",
        ],
    )
    pairs = ImagePairs.from_csv(csv_path, ARRAY_2D, pairing="intra")  # pairing is ignored
    names = [path.name for path in pairs.paths]
    assert names == ["a.mha", "b.mha", "c.mha", "c.mha"]  # c.mha once per modality
    assert pairs.modalities == ["mri", "mri", "ct", "mri"]
    listed = {("a.mha", "b.mha"), ("b.mha", "c.mha"), ("c.mha", "a.mha")}
    drawn = {(names[m], names[f]) for m, f in many_draws(pairs)}
    assert drawn == listed
    assert pairs.modalities[pairs.pairs[1][1]] == "ct"


@pytest.mark.parametrize(
    "lines, error, message",
    [
        (["image", "a.mha", "missing.mha"], FileNotFoundError, "line 3: no such image file"),
        (["image,subject", "a.mha,one", ",two"], ValueError, "line 3: the 'image' column"),
        (["moving,fixed", "a.mha,"], ValueError, "line 2: the 'fixed' column is empty"),
        (["path,subject", "a.mha,one"], ValueError, "line 1: the header needs"),
        (["image,moving,fixed", "a.mha,a.mha,b.mha"], ValueError, "line 1: the header has both"),
        (["image", "a.mha", "b.mha", "./a.mha"], ValueError, "line 4: .* listed twice"),
        (["image,modality", "a.mha,ct", "b.mha,pet"], ValueError, "line 3: modality"),
        (["image"], ValueError, "lists no images"),
    ],
    ids=["missing", "empty", "empty-pair", "neither", "both", "duplicate", "modality", "none"],
)
def test_from_csv_errors_name_the_line(tmp_path, lines, error, message):
    write_images(tmp_path, ["a.mha", "b.mha"])
    csv_path = write_csv(tmp_path / "list.csv", lines)
    with pytest.raises(error, match=message) as raised:
        ImagePairs.from_csv(csv_path, ARRAY_2D)
    assert str(csv_path) in str(raised.value)
    if message.startswith("line 4"):
        assert "first on line 2" in str(raised.value)


def test_from_csv_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such CSV file"):
        ImagePairs.from_csv(tmp_path / "missing.csv", ARRAY_2D)


# preprocessing


def test_ct_is_clipped_to_the_hounsfield_window_then_scaled(tmp_path):
    """CT: clip to [-1000, 1000] HU, then scale by it: -3000 -> 0, 0 -> 0.5, 500 -> 0.75."""
    array = np.zeros(ARRAY_2D)
    array[0, 0], array[0, 1], array[0, 2], array[0, 3] = -3000, 3000, 500, -500
    paths = [write_image(tmp_path / "ct.mha", array), write_images(tmp_path, ["b.mha"])[0]]
    image = ImagePairs.from_files(paths, ARRAY_2D, modality="ct").image(0)[0].numpy()
    assert image[0, :4].tolist() == [0.0, 1.0, 0.75, 0.25]
    assert np.all(image[1:] == 0.5)


def test_mri_is_clipped_at_its_99th_percentile_then_scaled(tmp_path):
    """MRI: one bright outlier is clipped (to the 118th of 120 values), not squashing the rest."""
    array = np.arange(120.0).reshape(ARRAY_2D)
    array[-1, -1] = 1e6
    paths = [write_image(tmp_path / "mri.mha", array), write_images(tmp_path, ["b.mha"])[0]]
    image = ImagePairs.from_files(paths, ARRAY_2D, modalities=["mri", "ct"]).image(0)
    expected = np.clip(array, 0, 117) / 117
    np.testing.assert_allclose(image[0].numpy(), expected, rtol=1e-6)


def test_a_network_with_its_own_recipe_has_its_images_preprocessed_by_it(tmp_path):
    """GradICON's lung recipe (window [-1000, 0] HU) for its fine-tuning, cached apart from
    uniGradICON's CT recipe for the same file."""
    array = np.full(ARRAY_2D, -1000.0)
    array[0, :4] = -1000, -500, 0, 500
    paths = [write_image(tmp_path / "ct.mha", array), write_images(tmp_path, ["b.mha"])[0]]
    options = dict(modality="ct", cache_directory=tmp_path / "cache")
    lung = ImagePairs.from_files(paths, ARRAY_2D, preprocessing=preprocess_gradicon_lung, **options)
    assert lung.image(0)[0, 0, :4].tolist() == [0.0, 0.5, 1.0, 1.0]
    fresh = ImagePairs.from_files(paths, ARRAY_2D, **options)  # not the lung recipe's cache
    assert fresh.image(0)[0, 0, :4].tolist() == [0.0, 0.25, 0.5, 0.75]


def test_an_unknown_modality_is_refused(tmp_path):
    paths = write_images(tmp_path, ["a.mha", "b.mha"])
    with pytest.raises(ValueError, match="modality must be one of"):
        ImagePairs.from_files(paths, ARRAY_2D, modality="pet")
    with pytest.raises(ValueError, match=re.escape(f"the modality of {paths[1]}")):
        ImagePairs.from_files(paths, ARRAY_2D, modalities=["ct", "xray"])
    with pytest.raises(ValueError, match="2 entries for 1 images"):
        ImagePairs.from_files(paths[:1], ARRAY_2D, modalities=["ct", "ct"], pairing="any")


# bad images


def write_constant(path):
    return write_image(path.with_suffix(".mha"), np.full(ARRAY_2D, 7.0))


def write_rgb(path):
    rgb = itk.Image[itk.RGBPixel[itk.UC], 2].New()
    rgb.SetRegions([ARRAY_2D[1], ARRAY_2D[0]])
    rgb.Allocate()
    path = path.with_suffix(".png")
    itk.imwrite(rgb, str(path))
    return path


def write_two_component_vector(path):
    vector = np.random.default_rng(0).random((*ARRAY_2D, 2)).astype(np.float32)
    path = path.with_suffix(".nrrd")
    itk.imwrite(itk.image_from_array(vector, is_vector=True), str(path))
    return path


def write_3d(path):
    return write_image(path.with_suffix(".nii.gz"), random_array(ARRAY_3D))


def write_garbage(suffix):
    def write(path):
        path = path.with_name(path.name + suffix)
        path.write_bytes(b"\x00\x01 this is not an image \xff" * 16)
        return path

    return write


def write_truncated_nii_gz(path):
    path = write_image(path.with_suffix(".nii.gz"), random_array(ARRAY_2D) * 100)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])  # ITK alone would read zeros for the rest
    return path


@pytest.mark.parametrize(
    "write_bad_image, message",
    [
        (write_constant, "constant"),
        (write_rgb, "vector pixels"),
        (write_two_component_vector, "vector pixels"),
        (write_3d, "3D image and the model grid is 2D"),
        (write_garbage(".nii.gz"), "cannot read"),
        (write_garbage(".mha"), "cannot read"),
        (write_truncated_nii_gz, "truncated"),
    ],
    ids=["constant", "rgb", "vector", "3d-for-2d", "garbage-nii-gz", "garbage-mha", "cut-nii-gz"],
)
def test_a_bad_image_raises_a_value_error_naming_the_file_on_preload(
    tmp_path, write_bad_image, message
):
    """Construction only checks files exist; preload() reads them all and names the bad one."""
    good = write_images(tmp_path, ["good.mha"])[0]
    bad = write_bad_image(tmp_path / "bad")
    pairs = ImagePairs.from_files([good, bad], ARRAY_2D)
    with pytest.raises(ValueError, match=message) as raised:
        pairs.preload()
    assert bad.name in str(raised.value)


def test_a_2d_image_for_a_3d_grid_is_refused(tmp_path):
    paths = write_images(tmp_path, ["a.mha", "b.mha"])
    with pytest.raises(ValueError, match="2D image and the model grid is 3D"):
        ImagePairs.from_files(paths, ARRAY_3D).image(1)


def test_a_missing_file_is_refused_at_construction(tmp_path):
    paths = write_images(tmp_path, ["a.mha"])
    with pytest.raises(FileNotFoundError, match="missing.mha"):
        ImagePairs.from_files([paths[0], tmp_path / "missing.mha"], ARRAY_2D)


# cache


@pytest.fixture
def read_image_calls(monkeypatch):
    """The paths ``read_tensor`` (ITK) is called with, recorded as it runs."""
    calls, read_image = [], data.read_tensor

    def recording_read_image(path, dimension):
        calls.append(path)
        return read_image(path, dimension)

    monkeypatch.setattr(data, "read_tensor", recording_read_image)
    return calls


def cached_pairs(tmp_path, count=3):
    paths = write_images(tmp_path / "images", [f"image{i}.mha" for i in range(count)])
    cache = tmp_path / "cache"
    return paths, cache, ImagePairs.from_files(paths, ARRAY_2D, cache_directory=cache).preload()


def test_a_second_run_reads_the_cache_without_itk(tmp_path, monkeypatch):
    paths, cache, first = cached_pairs(tmp_path)
    assert len(list(cache.glob("*.pt"))) == len(paths)

    def no_itk(path, dimension):
        raise AssertionError(f"read {path} with ITK, not from the cache")

    monkeypatch.setattr(data, "read_tensor", no_itk)
    second = ImagePairs.from_files(paths, ARRAY_2D, cache_directory=cache)
    for index in range(len(paths)):
        assert torch.equal(second.image(index), first.image(index))


def test_the_cache_is_per_grid_and_modality(tmp_path, read_image_calls):
    paths, cache, _ = cached_pairs(tmp_path, count=2)
    read_image_calls.clear()
    ImagePairs.from_files(paths, (8, 8), cache_directory=cache).preload()
    ImagePairs.from_files(paths, ARRAY_2D, modality="ct", cache_directory=cache).preload()
    assert read_image_calls == paths + paths
    assert len(list(cache.glob("*.pt"))) == 3 * len(paths)


@pytest.mark.parametrize("change", ["size", "mtime"])
def test_a_changed_file_is_read_again(tmp_path, read_image_calls, change):
    """A rewritten file (another size, or the same size and another time) misses the cache."""
    paths, cache, first = cached_pairs(tmp_path)
    shape = (14, 11) if change == "size" else ARRAY_2D
    size_before = paths[0].stat().st_size
    mtime_before = paths[0].stat().st_mtime_ns
    write_image(paths[0], random_array(shape, seed=99))
    if change == "mtime":
        assert paths[0].stat().st_size == size_before
        os.utime(paths[0], ns=(mtime_before + 10**10, mtime_before + 10**10))
    read_image_calls.clear()
    second = ImagePairs.from_files(paths, ARRAY_2D, cache_directory=cache).preload()
    assert read_image_calls == [paths[0]]
    assert not torch.equal(second.image(0), first.image(0))
    assert torch.equal(second.image(1), first.image(1))


def test_a_corrupt_cache_file_is_ignored_and_rewritten(tmp_path, read_image_calls):
    paths, cache, first = cached_pairs(tmp_path)
    cache_files = sorted(cache.glob("*.pt"))
    cache_files[0].write_bytes(b"not a tensor")
    cache_files[1].write_bytes(cache_files[1].read_bytes()[:100])  # truncated
    torch.save(torch.zeros(3), cache_files[2])  # a tensor of another shape
    read_image_calls.clear()
    second = ImagePairs.from_files(paths, ARRAY_2D, cache_directory=cache).preload()
    assert sorted(read_image_calls) == sorted(paths)
    assert sorted(cache.glob("*.pt")) == cache_files
    for index in range(len(paths)):
        assert torch.equal(second.image(index), first.image(index))
    for cache_file in cache_files:
        assert torch.load(cache_file, weights_only=True).shape == (1, *ARRAY_2D)


def test_a_cache_file_with_a_mangled_member_name_is_ignored(tmp_path):
    paths, cache, first = cached_pairs(tmp_path, count=2)
    for cache_file in cache.glob("*.pt"):
        content = bytearray(cache_file.read_bytes())
        entry = content.rfind(b"PK\x01\x02")  # the zip's last central-directory entry
        content[entry + 46] = 0xFF  # the first byte of its member name: not UTF-8
        cache_file.write_bytes(bytes(content))
    second = ImagePairs.from_files(paths, ARRAY_2D, cache_directory=cache)
    assert torch.equal(second.image(0), first.image(0))


def test_without_keep_in_memory_each_image_is_loaded_again(tmp_path, read_image_calls):
    paths = write_images(tmp_path, ["a.mha", "b.mha"])
    pairs = ImagePairs.from_files(paths, ARRAY_2D, keep_in_memory=False)
    assert torch.equal(pairs.image(0), pairs.image(0))
    assert read_image_calls == [paths[0], paths[0]]
