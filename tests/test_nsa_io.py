"""NSA catalog reader: real NSA rows from ../shared/data/nsa_lcs and small FITS files made here."""
from pathlib import Path

import fitsio
import numpy as np
import pytest

from sedscale.errors import MissingDataError, SedscaleError
from sedscale.io import NSA_BANDS, CatalogFormatError, read_nsa, read_nsa_file, ugriz_indices

NSA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nsa_lcs"
NSA_FILES = sorted(NSA_DIR.glob("*.fits"))

needs_nsa = pytest.mark.skipif(not NSA_FILES, reason=f"real NSA rows not found in {NSA_DIR}")


def _write_table(path, nsaid, columns=("NSAID", "Z", "NMGY", "NMGY_IVAR", "MASS")):
    """A minimal NSA-like FITS table with rows numbered by ``nsaid``."""
    n = len(nsaid)
    full = {
        "NSAID": np.asarray(nsaid, dtype=">i4"),
        "Z": np.linspace(0.02, 0.03, n).astype(">f4"),
        "NMGY": np.tile(np.arange(1, 8, dtype=">f4") * 10, (n, 1)) + np.arange(n, dtype=">f4")[:, None],
        "NMGY_IVAR": np.full((n, 7), 0.25, dtype=">f4"),
        "MASS": np.full(n, 1e10, dtype=">f4"),
    }
    fitsio.write(str(path), {c: full[c] for c in columns}, names=list(columns), clobber=True)
    return path


def test_band_slice_is_ugriz():
    assert list(ugriz_indices()) == [2, 3, 4, 5, 6]
    assert tuple(NSA_BANDS[i] for i in ugriz_indices()) == ("u", "g", "r", "i", "z")


@needs_nsa
def test_dedup_across_the_seven_files():
    df = read_nsa(NSA_FILES)
    assert len(NSA_FILES) == 7
    assert df.attrs["n_rows_read"] == 3947
    assert df.attrs["n_duplicates"] == 3947 - 3418
    assert len(df) == 3418 and df["id"].is_unique
    # First occurrence kept, in file order: the first file's rows lead unchanged.
    first = read_nsa(NSA_FILES[0])
    assert first["id"].is_unique
    np.testing.assert_array_equal(df["id"].to_numpy()[: len(first)], first["id"].to_numpy())


@needs_nsa
def test_units_and_columns_match_the_raw_nsa_vectors():
    df = read_nsa(NSA_FILES[0])
    raw = fitsio.read(str(NSA_FILES[0]), columns=["NSAID", "Z", "NMGY", "NMGY_IVAR", "MASS"], ext=1)
    bands = "ugriz"
    assert list(df.columns) == (
        ["id", "z", "z_err"] + [f"flux_{b}" for b in bands] + [f"flux_ivar_{b}" for b in bands] + ["mass_nsa"]
    )
    assert all(df[c].dtype == np.float64 for c in df.columns if c != "id")
    np.testing.assert_array_equal(df["id"], raw["NSAID"])
    np.testing.assert_allclose(df[[f"flux_{b}" for b in bands]], raw["NMGY"][:, 2:7], rtol=0)
    np.testing.assert_allclose(df[[f"flux_ivar_{b}" for b in bands]], raw["NMGY_IVAR"][:, 2:7], rtol=0)
    np.testing.assert_allclose(df["z"], raw["Z"], rtol=0)
    assert df["z_err"].isna().all()  # spectroscopic redshifts, used as exact
    # Nanomaggies: these nearby cluster galaxies (SDSS spectroscopic targets) have r ~ 13-18 mag.
    r_mag = 22.5 - 2.5 * np.log10(df["flux_r"][df["flux_r"] > 0])
    assert 13.0 < np.median(r_mag) < 18.0
    assert df["z"].between(0.013, 0.044).all()


@needs_nsa
def test_extra_columns_are_carried_in_lower_case():
    df = read_nsa(NSA_FILES[:2], columns=["RA", "dec"])
    assert {"ra", "dec"} <= set(df.columns)
    assert df["ra"].between(0, 360).all()


def test_dedup_keeps_first_occurrence(tmp_path):
    a = _write_table(tmp_path / "a.fits", [1, 2, 3])
    b = _write_table(tmp_path / "b.fits", [3, 4])
    df = read_nsa([a, b])
    assert list(df["id"]) == [1, 2, 3, 4]
    assert df.attrs["n_duplicates"] == 1
    # NSAID 3 comes from a.fits (its third row: NMGY[2] = 30 + 2), not b.fits (30 + 0).
    assert df.loc[df["id"] == 3, "flux_u"].item() == pytest.approx(32.0)


def test_missing_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.fits"
    with pytest.raises(MissingDataError, match="nope.fits"):
        read_nsa([missing])


def test_truncated_file_is_a_clear_error(tmp_path):
    src = NSA_FILES[0] if NSA_FILES else _write_table(tmp_path / "full.fits", list(range(500)))
    data = Path(src).read_bytes()
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CatalogFormatError, match="truncated") as info:
        read_nsa(truncated)
    assert "truncated.fits" in str(info.value)
    assert isinstance(info.value, SedscaleError)


def test_header_only_and_garbage_files_are_clear_errors(tmp_path):
    src = _write_table(tmp_path / "full.fits", [1, 2])
    head = tmp_path / "head.fits"
    head.write_bytes(src.read_bytes()[:2880])  # the primary header only
    with pytest.raises(CatalogFormatError, match="no table extension"):
        read_nsa_file(head)
    garbage = tmp_path / "garbage.fits"
    garbage.write_text("not a FITS file\n" * 100)
    with pytest.raises(CatalogFormatError, match="garbage.fits"):
        read_nsa(garbage)


def test_missing_column_is_named(tmp_path):
    path = _write_table(tmp_path / "noivar.fits", [1, 2], columns=("NSAID", "Z", "NMGY"))
    with pytest.raises(CatalogFormatError, match="NMGY_IVAR"):
        read_nsa(path)
    full = _write_table(tmp_path / "full.fits", [1, 2])
    with pytest.raises(CatalogFormatError, match="PETROTH50"):
        read_nsa(full, columns=["PETROTH50"])


def test_mass_is_optional(tmp_path):
    with_mass = _write_table(tmp_path / "a.fits", [1])
    without = _write_table(tmp_path / "b.fits", [2], columns=("NSAID", "Z", "NMGY", "NMGY_IVAR"))
    assert "mass_nsa" not in read_nsa(without).columns
    # A file set is reduced to the columns every file has.
    assert "mass_nsa" not in read_nsa([with_mass, without]).columns
    assert read_nsa(with_mass)["mass_nsa"].item() == pytest.approx(1e10)


def test_wrong_band_count_is_rejected(tmp_path):
    path = tmp_path / "fiveband.fits"
    fitsio.write(
        str(path),
        {"NSAID": np.array([1]), "Z": np.array([0.1]), "NMGY": np.ones((1, 5)), "NMGY_IVAR": np.ones((1, 5))},
        names=["NSAID", "Z", "NMGY", "NMGY_IVAR"],
    )
    with pytest.raises(CatalogFormatError, match="expected \\(7,\\)"):
        read_nsa(path)
