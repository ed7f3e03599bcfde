"""Tests of brainage.imaging.brain_extraction: deepbet wrapped in one function, and its errors.

The fast tests stand a fake in for deepbet's networks; the real model runs on a real IXI scan
(slow, skipped without ``../shared/data/ixi10``).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from brainage.imaging import brain_extraction as bet
from brainage.imaging import perturb
from brainage.imaging import preprocess as pp


class _FakeDeepbet:
    """Stands in for deepbet.BrainExtraction: a box mask, or the error deepbet raises."""

    def __init__(self, box: tuple[slice, ...] | None = None, error: Exception | None = None):
        self.box, self.error, self.calls = box, error, 0

    def run(self, img, threshold=0.5):
        self.calls += 1
        if self.error is not None:
            raise self.error
        mask = np.zeros(img.shape, dtype=bool)
        if self.box is not None:
            mask[self.box] = True
        tiv = 1e-3 * mask.sum() * np.prod(img.header.get_zooms()[:3])
        return img, nib.Nifti1Image(mask.astype(np.uint8), img.affine), tiv


@pytest.fixture
def scan() -> nib.Nifti1Image:
    """A (70, 80, 90) scan of 2 mm voxels (its content does not matter to the fake)."""
    return nib.Nifti1Image(np.ones((70, 80, 90), np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))


def _use(monkeypatch: pytest.MonkeyPatch, fake: _FakeDeepbet) -> None:
    monkeypatch.setattr(bet, "_deepbet_model", lambda: fake)


def test_mask_and_tiv(monkeypatch, scan) -> None:
    # 50 x 60 x 70 voxels of 8 mm³: 1680 cm³
    _use(monkeypatch, _FakeDeepbet(box=(slice(10, 60), slice(10, 70), slice(10, 80))))
    brain = bet.extract_brain(scan, source="sub-1.nii.gz")
    assert brain.tiv_cm3 == pytest.approx(1680.0) and brain.method == "deepbet"
    assert brain.mask.shape == scan.shape and brain.mask.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(brain.mask.affine, scan.affine)
    assert brain.data.sum() == 50 * 60 * 70 and brain.data.dtype == bool


def test_implausible_tiv_warns(monkeypatch, scan) -> None:
    _use(monkeypatch, _FakeDeepbet(box=(slice(10, 20), slice(10, 20), slice(10, 20))))  # 8 cm³
    with pytest.warns(UserWarning, match=r"sub-1.nii.gz: TIV 8 cm³ is outside the adult range"):
        bet.extract_brain(scan, source="sub-1.nii.gz")


@pytest.mark.parametrize(("fake", "message"), [
    (_FakeDeepbet(error=AssertionError("Not enough foreground to calculate bounding box")),
     r"deepbet\) of sub-1.nii.gz failed: AssertionError: Not enough foreground"),
    (_FakeDeepbet(error=ValueError("attempt to get argmax of an empty sequence")),
     "failed: ValueError: attempt to get argmax"),
    (_FakeDeepbet(box=None), "of sub-1.nii.gz found no brain: the mask is empty"),
])
def test_failures_name_the_scan(monkeypatch, scan, fake, message: str) -> None:
    _use(monkeypatch, fake)
    with pytest.raises(bet.BrainExtractionError, match=message):
        bet.extract_brain(scan, source="sub-1.nii.gz")


def test_bad_input(scan) -> None:
    four_d = nib.Nifti1Image(np.ones((7, 8, 9, 2), np.float32), np.eye(4))
    with pytest.raises(bet.BrainExtractionError, match=r"of x.nii: needs a 3D image; got shape"):
        bet.extract_brain(four_d, source="x.nii")
    for threads in (0, True, 1.5):
        with pytest.raises(ValueError, match="threads must be a positive int"):
            bet.extract_brain(scan, threads=threads)


def test_torch_threads_restored(monkeypatch, scan) -> None:
    import torch

    seen = []

    class Recording(_FakeDeepbet):
        def run(self, img, threshold=0.5):
            seen.append(torch.get_num_threads())
            return super().run(img, threshold)

    _use(monkeypatch, Recording(box=(slice(10, 60), slice(10, 70), slice(10, 80))))
    before = torch.get_num_threads()
    bet.extract_brain(scan, threads=1)
    assert seen == [1] and torch.get_num_threads() == before


def test_preprocess_names_the_file_when_extraction_fails(monkeypatch, tmp_path) -> None:
    _use(monkeypatch, _FakeDeepbet(box=None))
    path = tmp_path / "head.nii.gz"
    data = np.random.default_rng(0).normal(100, 10, (30, 31, 32)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0])), path)
    with pytest.raises(pp.PreprocessError, match=rf"{path}.* found no brain"):
        pp.preprocess_file(path)


# --- the real model, on a real scan ---------------------------------------------------------

@pytest.fixture(scope="module")
def ixi013(ixi10: Path) -> nib.Nifti1Image:
    return pp.load_scan(ixi10 / "sub-IXI013" / "anat" / "sub-IXI013_T1w.nii.gz")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_deepbet_on_a_real_scan_is_plausible_and_reproducible(ixi013) -> None:
    first = bet.extract_brain(ixi013, source="IXI013")
    second = bet.extract_brain(ixi013, source="IXI013")
    low, high = bet.TIV_RANGE_CM3
    assert low < first.tiv_cm3 < high
    np.testing.assert_array_equal(first.data, second.data)  # one thread: bit for bit
    assert first.mask.shape == ixi013.shape
    # the brain, not the head: well inside the head's foreground, centred in it left-right
    head = ixi013.get_fdata() > 0.1 * np.percentile(ixi013.get_fdata(), 99)
    assert first.data.sum() < 0.6 * head.sum() and (first.data & ~head).mean() < 0.01
    centre = np.argwhere(first.data).mean(axis=0)
    assert abs(centre[0] - np.argwhere(head).mean(axis=0)[0]) < 5  # voxels


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_deepbet_mask_follows_the_head_through_a_reordered_file(ixi013) -> None:
    """The same head stored with its axes permuted and reversed gets the same mask in world
    space (deepbet works on the closest canonical orientation)."""
    reordered = perturb.reorder_axes(ixi013, (2, 0, 1), (True, False, True))
    mask = bet.extract_brain(reordered, source="reordered").mask
    back = nib.as_closest_canonical(mask)
    np.testing.assert_array_equal(np.asarray(back.dataobj),
                                  np.asarray(bet.extract_brain(ixi013).mask.dataobj))
