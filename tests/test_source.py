"""Partitioned catalog input (sedscale.io.source): every format and partitioning gives the eager reader's rows."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sedscale.errors import ConfigError, InputChangedError, MissingDataError
from sedscale.io.catalog import CatalogFormatError, ColumnMapping, read_catalog
from sedscale.io.nsa import read_nsa
from sedscale.io.source import LINE_INDEX_STRIDE, expand_catalog_paths, open_catalog, read_partition
from sedscale.observe.filters import SDSS_BANDS

CANONICAL = ["id", "z"] + [f"flux_{b}" for b in SDSS_BANDS] + [f"flux_ivar_{b}" for b in SDSS_BANDS]
FLUX_MAP = ["id=id", "z=z", "flux=flux_{band}", "flux_ivar=flux_ivar_{band}", "flux_unit=nanomaggy"]


def _by_partitions(source, size: int) -> pd.DataFrame:
    return pd.concat([read_partition(p, source.spec) for p in source.partitions(size)], ignore_index=True)


@pytest.fixture(scope="module")
def nsa_files(shared_data):
    return sorted((shared_data / "nsa_lcs").glob("*_NSAmastertable.fits"))


@pytest.fixture(scope="module")
def reference(nsa_files) -> pd.DataFrame:
    """The de-duplicated NSA rows as the eager NSA reader gives them (3,418 galaxies)."""
    return read_nsa(nsa_files)


def test_nsa_files_partitioned_equal_the_eager_reader_with_repeats_dropped(nsa_files, reference):
    source = open_catalog(nsa_files)
    assert (source.n_rows_read, source.n_duplicates, source.n_rows) == (3947, 529, len(reference))
    assert source.dedup_checked and source.kind == "nsa"
    for size in (97, 250, 5000):
        got = _by_partitions(source, size)
        pd.testing.assert_frame_equal(got, reference)
    # Partitions cross file boundaries and skip the repeats inside them.
    parts = source.partitions(250)
    assert any(len(p.segments) == 2 for p in parts) and sum(len(p.drop) for p in parts) == 529
    rows = [3000, 5, 17, 3417]
    np.testing.assert_array_equal(source.read_rows(rows, 250)["id"], reference["id"].iloc[rows])


def test_csv_text_fits_and_parquet_datasets_give_identical_rows(reference, tmp_path):
    import fitsio

    df = reference[CANONICAL].iloc[:1500].reset_index(drop=True)
    df.loc[3, "flux_u"] = np.nan  # bad values pass through untouched
    df.to_csv(tmp_path / "cat.csv", index=False)
    with open(tmp_path / "cat.txt", "w") as fh:
        fh.write("# " + " ".join(CANONICAL) + "\n\n")
        for k, row in enumerate(df.itertuples(index=False)):
            if k % 400 == 0:
                fh.write("# a comment line\n")
            fh.write(" ".join(repr(v) for v in row) + "\n")
    fitsio.write(str(tmp_path / "cat.fits"), df.to_records(index=False), clobber=True)
    (tmp_path / "ds" / "b").mkdir(parents=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table.slice(0, 700), tmp_path / "ds" / "a.parquet", row_group_size=64)
    pq.write_table(table.slice(700), tmp_path / "ds" / "b" / "c.parquet", row_group_size=100)
    pq.write_metadata(table.schema, tmp_path / "ds" / "_common_metadata")
    mapping = ColumnMapping.from_pairs(FLUX_MAP)
    inputs = {"csv": tmp_path / "cat.csv", "text": tmp_path / "cat.txt", "fits": tmp_path / "cat.fits",
              "parquet directory": tmp_path / "ds", "parquet glob": str(tmp_path / "ds" / "**" / "*.parquet")}
    for name, path in inputs.items():
        source = open_catalog(path, mapping)
        assert source.n_rows == 1500, name
        for size in (LINE_INDEX_STRIDE + 7, 1500):
            got = _by_partitions(source, size)
            pd.testing.assert_frame_equal(got[CANONICAL], df, check_dtype=False, obj=f"{name}, partitions of {size}")
    assert [p.name for p in expand_catalog_paths(tmp_path / "ds")] == ["a.parquet", "c.parquet"]


def test_rows_without_ids_are_numbered_across_files_and_never_dropped(reference, tmp_path):
    df = reference[CANONICAL].iloc[:300]
    for k in range(3):
        df.iloc[100 * k : 100 * (k + 1)].to_parquet(tmp_path / f"p{k}.parquet", row_group_size=30)
    mapping = ColumnMapping.from_pairs(FLUX_MAP[1:])
    source = open_catalog(sorted(tmp_path.glob("*.parquet")) * 2, mapping)  # the same files twice: no id, no repeats
    got = _by_partitions(source, 77)
    np.testing.assert_array_equal(got["id"], np.arange(600))
    np.testing.assert_array_equal(got["flux_r"], np.tile(df["flux_r"], 2))


def test_repeated_ids_stay_above_the_dedup_limit_and_the_source_says_so(nsa_files):
    source = open_catalog(nsa_files[:2], dedup_max_rows=100)
    assert not source.dedup_checked and source.ids is None
    assert source.n_rows == source.n_rows_read == len(_by_partitions(source, 500))


def test_a_file_changed_after_planning_is_a_clear_error_not_wrong_rows(reference, tmp_path):
    path = tmp_path / "cat.csv"
    reference[CANONICAL].iloc[:600].to_csv(path, index=False)
    source = open_catalog(path, ColumnMapping.from_pairs(FLUX_MAP))
    reference[CANONICAL].iloc[:400].to_csv(path, index=False)
    with pytest.raises(InputChangedError, match="input file changed during the run .size, modification time"):
        _by_partitions(source, 250)


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_quoted_newlines_in_a_csv_field_are_one_row_at_every_partition_size(tmp_path, suffix):
    """A quoted field holding newlines (and escaped quotes, blank lines) is one row: counts and seeks respect quotes."""
    rng = np.random.default_rng(4)
    n = 2 * LINE_INDEX_STRIDE + 88
    names = [f"galaxy {k}" for k in range(n)]
    for k in range(0, n, 7):
        names[k] = f"NGC {k}\nM{k}"
    for k in range(3, n, 50):
        names[k] = f'the "{k}" one,\n\n  second paragraph\n'
    names[LINE_INDEX_STRIDE - 1] = "spans\nthe\nstride"
    df = pd.DataFrame({"id": np.arange(n) + 10, "z": rng.uniform(0.01, 0.06, n), "name": names,
                       **{f"flux_{b}": rng.uniform(1, 100, n) for b in SDSS_BANDS},
                       **{f"flux_ivar_{b}": rng.uniform(1, 10, n) for b in SDSS_BANDS}})
    path = tmp_path / f"cat{suffix}"
    df.to_csv(path, index=False)
    expected = pd.read_csv(path)
    assert len(expected) == n and expected["name"].tolist() == names
    mapping = ColumnMapping.from_pairs(FLUX_MAP)
    for dedup_max_rows in (10**6, 0):  # ids read (de-duplication) or not
        source = open_catalog(path, mapping, keep=["name"], dedup_max_rows=dedup_max_rows)
        assert source.n_rows == n
        for size in (37, LINE_INDEX_STRIDE - 1, LINE_INDEX_STRIDE + 7, n):
            got = _by_partitions(source, size)
            pd.testing.assert_frame_equal(got[["id", "z", "name", "flux_r"]], expected[["id", "z", "name", "flux_r"]],
                                          check_dtype=False, obj=f"partitions of {size}")


def test_bad_paths_are_refused_before_any_row_is_read(tmp_path):
    with pytest.raises(MissingDataError, match="does not exist"):
        open_catalog(tmp_path / "absent.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no catalog file"):
        open_catalog(tmp_path / "empty")
    pd.DataFrame({"zz": [0.1]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(CatalogFormatError, match="missing column"):
        open_catalog(tmp_path / "x.parquet", ColumnMapping.from_pairs(FLUX_MAP))
    with pytest.raises(CatalogFormatError, match="neither an NSA catalog"):
        read_catalog(tmp_path / "x.parquet")


def test_the_manifest_writer_spaces_costly_writes_and_flush_always_writes(tmp_path):
    from sedscale.io.runs import ManifestWriter, new_manifest, read_manifest

    manifest = new_manifest("sedscale.test", "abc", {}, 3)
    writer = ManifestWriter(tmp_path, manifest, max_interval=3600.0)
    writer()
    assert writer.writes == 1 and read_manifest(tmp_path, "sedscale.test")["partitions"] == {}
    writer._last_cost = 1000.0  # as if the last write took 1000 s: the next one waits max_interval
    manifest["partitions"]["0"] = {"file": "part-000000.parquet", "sha256": "x"}
    writer()
    assert writer.writes == 1 and read_manifest(tmp_path, "sedscale.test")["partitions"] == {}
    writer.flush()
    assert writer.writes == 2 and "0" in read_manifest(tmp_path, "sedscale.test")["partitions"]
    eager = ManifestWriter(tmp_path, manifest, max_interval=0.0)
    for _ in range(3):
        eager()
    assert eager.writes == 3
