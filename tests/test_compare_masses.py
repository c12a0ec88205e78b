"""``bin/compare_masses`` on small synthetic catalogs: the id join, its refusals, strict JSON, the plot."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sedscale.cli.compare import build_parser, main
from sedscale.errors import ConfigError
from sedscale.validate.reference import compare_masses, comparison_figure, join_ids

N = 60
OFFSET = 0.1


def _catalog(path: Path, ids) -> Path:
    """A posterior catalog of N galaxies whose masses are the reference's (10 + row / N) plus OFFSET."""
    rng = np.random.default_rng(3)
    pd.DataFrame({"id": ids, "z": np.full(N, 0.02), "status": "ok", "mag_g": 17 + rng.uniform(0.2, 1.0, N),
                  "mag_r": np.full(N, 17.0), "log_mstar_total_p50": 10 + np.arange(N) / N + OFFSET}).to_parquet(path)
    return path


def _reference(path: Path, ids, mass=None) -> Path:
    """A FITS reference with an ``ID`` column and ``MSTAR`` (log Msun; 10 + position of the id in the catalog)."""
    import fitsio

    ids = np.asarray(ids)
    data = np.zeros(ids.size, dtype=[("ID", ids.dtype), ("MSTAR", "f8"), ("Z", "f8")])
    data["ID"], data["Z"] = ids, 0.02
    data["MSTAR"] = 10 + np.arange(ids.size) / N if mass is None else mass
    fitsio.write(str(path), data, clobber=True)
    return path


def _run(capsys, catalog: Path, reference: Path, *extra: str) -> tuple[int, str, str]:
    rc = main([str(catalog), "--reference", str(reference), "--ref-mass", "MSTAR", "--match", "ID", *extra])
    out, err = capsys.readouterr()
    return rc, out, err


def _strict_load(path: Path):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_string_reference_ids_join_integer_catalog_ids_and_the_json_is_strict(tmp_path, capsys):
    order = np.random.default_rng(0).permutation(N)
    cat = _catalog(tmp_path / "cat.parquet", np.arange(N, dtype=np.int64)[order])
    # String ids, padded, in catalog order: row k of the reference is the catalog's row k.
    ref = _reference(tmp_path / "ref.fits", np.array([f" {i} " for i in order], dtype="S6"))
    rc, out, err = _run(capsys, cat, ref, "--out", str(tmp_path / "cmp"))
    assert rc == 0, err
    assert f"{N} of {N} catalog ids found" in out and "compared as integers" in out
    report = _strict_load(tmp_path / "cmp.json")
    assert report["n_ok"] == N and report["overall"]["median"] == pytest.approx(OFFSET)
    assert report["overall"]["nmad"] == pytest.approx(0.0, abs=1e-9)
    assert report["by"]["g-r"][0]["low"] is None and report["by"]["g-r"][-1]["high"] is None
    empty = [r for r in report["by"]["z"] if r["n"] == 0]
    assert empty and all(r["median"] is None and r["nmad"] is None for r in empty)
    assert (tmp_path / "cmp.png").stat().st_size > 0


@pytest.mark.parametrize("ref_ids, expected", [
    (np.arange(1000, 1000 + N), "none of the catalog's 60 ids is in the reference's ID column (60 rows)"),
    (np.array([f"g{i}" for i in range(N)], dtype="S4"),
     "integer catalog ids, string reference ids: integer-valued ones compared as integers"),
])
def test_no_matching_id_is_a_one_line_error(tmp_path, capsys, ref_ids, expected):
    cat = _catalog(tmp_path / "cat.parquet", np.arange(N))
    rc, out, err = _run(capsys, cat, _reference(tmp_path / "ref.fits", ref_ids), "--out", str(tmp_path / "cmp"))
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("compare_masses: error: --match ID: ") and expected in err
    assert "catalog ids: 0, 1, 2" in err
    assert not (tmp_path / "cmp.json").exists() and "nan" not in out


def test_repeated_reference_ids_are_refused_unless_the_first_is_asked_for(tmp_path, capsys):
    cat = _catalog(tmp_path / "cat.parquet", np.arange(N))
    ids = np.concatenate([np.arange(N), [5, 7, 7]])
    mass = np.concatenate([10 + np.arange(N) / N, [9.0, 9.0, 9.0]])
    ref = _reference(tmp_path / "ref.fits", ids, mass)
    rc, _, err = _run(capsys, cat, ref)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "2 of the catalog's ids occur more than once in the reference (e.g. 5 (2 rows), 7 (3 rows))" in err
    assert "--ref-duplicates first" in err
    rc, out, err = _run(capsys, cat, ref, "--ref-duplicates", "first")
    assert rc == 0, err
    assert "2 ids on several reference rows: first row used" in out
    assert f"median offset {OFFSET:+.3f} dex, NMAD 0.000 dex" in out


def test_repeated_catalog_ids_are_refused(tmp_path, capsys):
    ids = np.arange(N)
    ids[10] = ids[11] = 3
    rc, _, err = _run(capsys, _catalog(tmp_path / "cat.parquet", ids), _reference(tmp_path / "ref.fits", np.arange(N)))
    assert rc == 2 and "1 ids occur more than once in the catalog (e.g. 3)" in err


def test_no_valid_reference_mass_is_an_error_with_the_counts(tmp_path, capsys):
    cat = _catalog(tmp_path / "cat.parquet", np.arange(N))
    rc, _, err = _run(capsys, cat, _reference(tmp_path / "ref.fits", np.arange(N), np.full(N, -1.0)))
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert f"no galaxy to compare: {N} of {N} catalog rows joined with the reference, 0 of them with a valid" in err
    assert "--ref-linear" in err


def test_join_ids_normalizes_only_across_kinds():
    rows, note = join_ids(np.array([1, 2, 3]), np.array([b"3 ", b"1", b"x"]), "ID")
    np.testing.assert_array_equal(rows, [1, -1, 0])
    assert note.startswith("2 of 3 catalog ids found")
    rows, _ = join_ids(np.array([7, 8]), np.array([8.0, np.nan, 7.0]), "ID")
    np.testing.assert_array_equal(rows, [2, 0])
    # Same kind: compared as read ("007" is not "7").
    rows, note = join_ids(np.array(["7", "8"], dtype=object), np.array(["007", "8"]), "ID")
    np.testing.assert_array_equal(rows, [-1, 1])
    assert "compared as integers" not in note
    with pytest.raises(ConfigError, match="duplicates must be one of error, first"):
        join_ids(np.array([1]), np.array([1]), "ID", duplicates="last")


def test_gswlc_help_example_has_its_redshift_column_and_the_plot_a_colour_bar():
    text = build_parser().format_help()
    assert "--ref-mass LOGMSTAR --ref-z Z --match rows" in text
    n = 50
    rng = np.random.default_rng(1)
    ref = rng.uniform(9, 11, n)
    cat = pd.DataFrame({"status": "ok", "z": np.full(n, 0.05), "mag_g": 17 + rng.uniform(0.2, 1.0, n),
                        "mag_r": np.full(n, 17.0), "log_mstar_total_p50": ref + 0.1})
    fig = comparison_figure(cat, ref, compare_masses(cat, ref, label="LOGMSTAR"))
    try:
        bar = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        assert len(bar) == 1 and bar[0].get_ylabel() == "g - r (observed)"
        assert fig.axes[0].get_xlabel() == r"LOGMSTAR: $\log_{10}\,M_\ast\,/\,M_\odot$"
        assert "[Msun]" not in fig.axes[0].get_ylabel()
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
