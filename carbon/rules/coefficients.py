"""The vocabulary's tables as value types: legend crosswalks (source code -> carbon class),
coefficient sets (pool densities per class and ecozone, with their sources) and catalog
entries. Lookups only; reading and validating the files is carbon/io/tables.py.
docs/methods.md §2, §7.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from carbon.errors import InputError
from carbon.rules.vocabulary import ANY_ECOZONE, INVEST_LEGEND, POOLS


@dataclass(frozen=True)
class Crosswalk:
    """Source codes of one legend -> carbon classes."""

    legend: str
    path: str
    codes: np.ndarray  # sorted int64
    classes: tuple[str, ...]  # carbon class of each code (same order)
    labels: tuple[str, ...]
    sha256: str
    colors: tuple[str | None, ...] = ()  # display colour of each code (optional column ``color``)
    labels_zh: tuple[str, ...] = ()  # Chinese label of each code (optional column ``label_zh``; "" where none)

    def lookup(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index of each code in ``self.codes`` and whether it is known (vectorised: a table
        indexed by code for 8- and 16-bit rasters, a binary search otherwise)."""
        if codes.dtype.kind in "ui" and codes.dtype.itemsize <= 2:
            table = code_table(self.codes, codes.dtype.str)
            offset = code_offset(codes.dtype)
            idx = table[codes.astype(np.int32) + offset] if offset else table[codes]
            known = idx < len(self.codes)
            return np.where(known, idx, 0) if not known.all() else idx, known
        idx = np.searchsorted(self.codes, codes)
        idx = np.clip(idx, 0, len(self.codes) - 1)
        known = self.codes[idx] == codes
        return idx, known


_CODE_TABLES: dict[tuple[bytes, str], np.ndarray] = {}


def code_offset(dtype: np.dtype) -> int:
    """What a raw 8/16-bit code adds to become its position in :func:`code_table`."""
    return 0 if dtype.kind == "u" else 1 << (8 * dtype.itemsize - 1)


def code_table(codes: np.ndarray, dtype: str) -> np.ndarray:
    """Index of each possible value of an 8/16-bit dtype in ``codes`` (len(codes): not a code)."""
    key = (codes.tobytes(), dtype)
    if key not in _CODE_TABLES:
        dt = np.dtype(dtype)
        lo = 0 if dt.kind == "u" else -(1 << (8 * dt.itemsize - 1))
        table = np.full(1 << (8 * dt.itemsize), len(codes), dtype=np.int32)  # len(codes): not a code
        inside = (codes >= lo) & (codes < lo + len(table))
        table[codes[inside] - lo] = np.flatnonzero(inside)
        _CODE_TABLES[key] = table
    return _CODE_TABLES[key]


@dataclass(frozen=True)
class CoefficientSet:
    """A coefficient set: long IPCC-style table, or an InVEST carbon pools table."""

    name: str  # file stem
    path: str
    sha256: str
    kind: str  # "long" or "invest"
    table: pd.DataFrame = field(repr=False)
    #: ``densities`` by (ecozone, classes): thousands of sites share a few ecozones and classes
    _densities: dict[tuple[str | None, tuple[str, ...], bool], pd.DataFrame] = field(
        default_factory=dict, repr=False, compare=False, hash=False)

    @property
    def is_invest(self) -> bool:
        return self.kind == "invest"

    def densities(
        self, ecozone: str | None, classes: list[str], *, site_id: str | None = None, strict: bool = True
    ) -> pd.DataFrame:
        """Pool densities (t C/ha) for ``classes``: index carbon_class, a column per pool,
        and ``source_<pool>`` columns naming where each number comes from; per pool also
        ``sd_<pool>``, ``growth_<pool>`` and the age curve (docs/methods.md §9):
        ``curve_<pool>`` (``linear``, ``chapman_richards`` or ``age_curve``; ``linear`` where
        the table gives none), ``curve_k_<pool>`` and ``curve_p_<pool>`` (NaN unless
        chapman_richards) and ``age_curve_<pool>`` (the ``age:stock`` text, or None).

        An ecozone-specific row wins over a ``*`` row. A class, pool or ecozone that the
        table does not cover is an error, never a silent zero (``strict=False`` leaves NaN).
        """
        if self.is_invest:
            key = (ecozone, tuple(classes), strict)
            known = self._densities.get(key)
            if known is None:  # (an error names the site that met it, and is not kept)
                known = self._densities[key] = self._invest_densities(classes, site_id=site_id, strict=strict)
            return known.copy()
        # every class of the table looked up once per ecozone; a site takes its rows
        every = (ecozone, (), False)
        table = self._densities.get(every)
        if table is None:
            names = list(dict.fromkeys([*map(str, self.table["carbon_class"]), *classes]))
            table = self._densities[every] = self._lookup(ecozone, names, site_id=site_id, strict=False)
        missing = [c for c in classes if c not in table.index]
        if missing:  # a class the table has never seen: looked up with the others
            names = [*table.index, *dict.fromkeys(missing)]
            table = self._densities[every] = self._lookup(ecozone, names, site_id=site_id, strict=False)
        out = table.loc[list(classes)]  # a new frame: the kept table is never handed out
        if strict:
            gaps = [f"no {pool} coefficient for class {cls!r} in ecozone {ecozone!r} (nor '*')"
                    for pool in POOLS for cls in out.index[out[pool].isna()]]
            if gaps:
                raise InputError(
                    f"coefficient set {self.name!r} does not cover every class present at the site",
                    path=self.path,
                    site_id=site_id,
                    problems=gaps,
                )
        return out

    def _lookup(self, ecozone: str | None, classes: list[str], *, site_id: str | None, strict: bool) -> pd.DataFrame:
        t = self.table
        if ecozone is None or (ecozone not in set(t["ecozone"]) and ecozone != ANY_ECOZONE):
            known = sorted(set(t["ecozone"]) - {ANY_ECOZONE})
            raise InputError(
                f"ecozone {ecozone!r} is absent from coefficient set {self.name!r} (it has: {', '.join(known)})",
                path=self.path,
                site_id=site_id,
            )
        rows = t[t["ecozone"].isin([ecozone, ANY_ECOZONE])].copy()
        rows["_specific"] = rows["ecozone"] == ecozone
        rows = rows.sort_values("_specific").drop_duplicates(["carbon_class", "pool"], keep="last")
        out = pd.DataFrame(index=pd.Index(classes, name="carbon_class"))
        missing = []
        for pool in POOLS:
            p = rows[rows["pool"] == pool].set_index("carbon_class")
            out[pool] = p["stock_tc_per_ha"].reindex(out.index)
            out[f"sd_{pool}"] = p["sd_tc_per_ha"].reindex(out.index)
            out[f"source_{pool}"] = p["source"].reindex(out.index)
            growth = p["growth_tc_per_ha_yr"] if "growth_tc_per_ha_yr" in p.columns else pd.Series(dtype=float)
            out[f"growth_{pool}"] = growth.reindex(out.index).astype(float)
            for name, values in _curve_columns(p).items():
                out[f"{name}_{pool}"] = values.reindex(out.index)
            for cls in out.index[out[pool].isna()]:
                missing.append(f"no {pool} coefficient for class {cls!r} in ecozone {ecozone!r} (nor '*')")
        if missing and strict:
            raise InputError(
                f"coefficient set {self.name!r} does not cover every class present at the site",
                path=self.path,
                site_id=site_id,
                problems=missing,
            )
        return out

    def _invest_densities(self, classes: list[str], *, site_id: str | None, strict: bool) -> pd.DataFrame:
        t = self.table.set_index(self.table["lucode"].astype(str))
        missing = [c for c in classes if c not in t.index]
        if missing and strict:
            raise InputError(
                f"raster codes absent from InVEST pools table {self.name!r}: {', '.join(missing)}",
                path=self.path,
                site_id=site_id,
            )
        src = f"InVEST carbon pools table {Path(self.path).name}"
        out = pd.DataFrame(index=pd.Index(classes, name="carbon_class"))
        mapping = {"agb": "c_above", "bgb": "c_below", "deadwood": "c_dead", "litter": None, "soc": "c_soil"}
        for pool, col in mapping.items():
            out[pool] = 0.0 if col is None else t[col].reindex(classes).to_numpy(dtype=float)
            out[f"sd_{pool}"] = np.nan
            out[f"growth_{pool}"] = np.nan
            for name, values in _curve_columns(pd.DataFrame(index=out.index)).items():  # no curves in InVEST
                out[f"{name}_{pool}"] = values
            out[f"source_{pool}"] = (
                f"{src}: not a separate pool (InVEST c_dead holds dead wood and litter)"
                if col is None
                else f"{src}, column {col}"
            )
        return out


def _curve_columns(rows: pd.DataFrame) -> dict[str, pd.Series]:
    """The age curve of each row of a coefficient table (one pool, indexed by class): curve
    (``linear`` where the table gives neither a curve nor an age_curve, ``age_curve`` where it
    gives an age_curve), curve_k, curve_p (float, NaN where none) and age_curve (text or None).
    Tables without these columns are linear throughout."""
    def col(name: str) -> pd.Series:
        return rows[name] if name in rows.columns else pd.Series(np.nan, index=rows.index, dtype=object)

    def text(v: object) -> str | None:
        return v.strip() if isinstance(v, str) and v.strip() else None

    age_curve = pd.Series([text(v) for v in col("age_curve")], index=rows.index, dtype=object)
    named = pd.Series([text(v) or "linear" for v in col("curve")], index=rows.index, dtype=object)
    curve = named.where(age_curve.isna(), "age_curve")
    return {
        "curve": curve,
        "curve_k": pd.to_numeric(col("curve_k"), errors="coerce").astype(float),
        "curve_p": pd.to_numeric(col("curve_p"), errors="coerce").astype(float),
        "age_curve": age_curve,
    }


def invest_crosswalk(coefficients: CoefficientSet) -> Crosswalk:
    """With an InVEST pools table the raster codes are the classes (legend ``lucode``)."""
    t = coefficients.table.sort_values("lucode")
    label_col = next((c for c in t.columns if c.lower() in ("lulc_name", "lulc_desc", "description")), None)
    labels = tuple(str(v) for v in t[label_col]) if label_col else tuple("" for _ in range(len(t)))
    return Crosswalk(
        legend=INVEST_LEGEND,
        path=coefficients.path,
        codes=t["lucode"].to_numpy(dtype=np.int64),
        classes=tuple(str(v) for v in t["lucode"]),
        labels=labels,
        sha256=coefficients.sha256,
    )


@dataclass(frozen=True)
class CatalogEntry:
    year: int
    path: str  # absolute
    legend: str
    source: str
    accuracy: str | None = None  # absolute path of the map's accuracy-assessment sample (CSV), if any


