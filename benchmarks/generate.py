"""Synthetic benchmark inputs, written to benchmarks/_work/ (git-ignored). numpy only.

* ``make_pair(size)``: a "current" (2020) and a "future" (2030) land-cover map, N x N uint8,
  tiled 256 x 256, LZW, EPSG:32650 (UTM 50N, Wuhan area), 30 m pixels, nodata 255 on an
  irregular corner (about 4 % of the map, the same pixels in both years). Codes are CLCD's
  (1 cropland, 2 forest, 3 shrub, 4 grassland, 5 water, 7 barren, 8 impervious, 9 wetland).

  - ``kind="patchy"`` (the 8000^2 pair): classes are thresholds of smooth random fields
    (value noise: bilinear interpolation of random lattices at 1024, 256, 64 and 16 px, summed),
    so patches have ragged edges at every scale, like a real 30 m land-cover map. The future
    map applies urban growth, deforestation, afforestation and wetland restoration on further
    smooth fields (about 10 % of pixels change).
  - ``kind="blocky"`` (the big pair, for the memory test): the same recipe on a coarse grid
    (one cell = 50 x 50 px) repeated to full size: large uniform patches, fast to write,
    small on disk.

* ``write_pools(path)``: an InVEST carbon pools table for those codes (t C/ha; values are
  exact in float32 so InVEST's float32 output rasters add no rounding of their own).
* ``make_sites(path, raster, n)``: n small site polygons (5-20 ha, irregular) inside the map.

Everything derives from a fixed seed: the same arguments give the same files. Files are
regenerated only when missing or written with other parameters (a JSON sidecar records them).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

WORK = Path(__file__).resolve().parent / "_work"
CRS = "EPSG:32650"
PIXEL = 30.0
#: Upper-left corner: the map's middle column sits on UTM 50N's central meridian (x = 500 km).
NORTH = 3_450_000.0
NODATA = 255
TILE = 256
SEED = 20240611
#: The map years of the pair: both observed years (an official run refuses a map year after the
#: current one), ten years apart as InVEST's current and future maps.
YEARS = (2014, 2024)
SPECKLE = 0.15

# CLCD codes
CROP, FOREST, SHRUB, GRASS, WATER, BARREN, URBAN, WETLAND = 1, 2, 3, 4, 5, 7, 8, 9
LABELS = {CROP: "cropland", FOREST: "forest", SHRUB: "shrubland", GRASS: "grassland", WATER: "water",
          BARREN: "barren", URBAN: "impervious", WETLAND: "wetland"}
#: t C/ha (c_above, c_below, c_soil, c_dead): multiples of 1/8, exact in float32.
POOLS = {
    CROP: (5.0, 1.25, 55.5, 0.0),
    FOREST: (121.5, 29.875, 70.25, 8.5),
    SHRUB: (31.25, 12.5, 60.0, 2.125),
    GRASS: (6.5, 9.75, 58.0, 0.5),
    WATER: (0.0, 0.0, 0.0, 0.0),
    BARREN: (0.0, 0.0, 12.0, 0.0),
    URBAN: (2.0, 0.5, 30.125, 0.0),
    WETLAND: (8.25, 4.0, 148.75, 1.0),
}


# --- value noise -----------------------------------------------------------------------


class Field:
    """A smooth random field over an N x N grid: a weighted sum of octaves of value noise
    (a random lattice every ``scale`` px, smoothstep-bilinear in between). Evaluated on any
    set of rows and columns, so a map is written strip by strip."""

    def __init__(self, rng: np.random.Generator, n: int, scales: tuple[int, ...], weights: tuple[float, ...]):
        self.octaves = []
        for s, w in zip(scales, weights, strict=True):
            m = n // s + 3
            self.octaves.append((s, w, rng.standard_normal((m, m)), rng.uniform(0, s, 2)))
        self.sd = 1.0

    def __call__(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        out = np.zeros((len(rows), len(cols)), dtype=np.float32)
        for s, w, lat, (dy, dx) in self.octaves:
            fy = (rows + dy) / s
            fx = (cols + dx) / s
            iy = fy.astype(np.int64)
            ix = fx.astype(np.int64)
            ty = (fy - iy).astype(np.float32)
            tx = (fx - ix).astype(np.float32)
            ty = ty * ty * (3 - 2 * ty)
            tx = tx * tx * (3 - 2 * tx)
            a = lat[iy].astype(np.float32) * (1 - ty)[:, None] + lat[iy + 1].astype(np.float32) * ty[:, None]
            out += w * (a[:, ix] * (1 - tx) + a[:, ix + 1] * tx)
        return out / self.sd

    def quantiles(self, n: int, qs: list[float]) -> dict[float, float]:
        """Quantiles estimated on a regular subsample (every 7th row and column)."""
        idx = np.arange(0, n, 7)
        v = self(idx, idx)
        return dict(zip(qs, np.quantile(v, qs).tolist(), strict=True))


class Landscape:
    """The recipe: fields and thresholds of the current and the future map."""

    def __init__(self, n: int, seed: int = SEED) -> None:
        rng = np.random.default_rng(seed)
        self.n = n
        sc = (1024, 256, 64, 16)
        self.elev = Field(rng, n, (*sc, 4), (1.0, 0.55, 0.3, 0.15, 0.08))
        self.moist = Field(rng, n, sc[:3], (1.0, 0.5, 0.25))
        self.urban = Field(rng, n, (256, 64, 16), (1.0, 0.6, 0.3))
        self.change = Field(rng, n, (128, 32, 8), (1.0, 0.6, 0.35))
        self.edge = Field(rng, n, (512, 64), (1.0, 0.3))
        qs = [0.05, 0.08, 0.12, 0.4, 0.52, 0.62, 0.7, 0.93, 0.94, 0.97]
        self.qe = self.elev.quantiles(n, qs)
        self.qm = self.moist.quantiles(n, [0.3, 0.5, 0.7])
        self.qu = self.urban.quantiles(n, [0.9, 0.95])
        self.qc = self.change.quantiles(n, [0.05, 0.93])
        sub = np.arange(0, n, 7)
        self.edge_sd = float(np.std(self.edge(sub, sub)))
        self.elev_sd = float(np.std(self.elev(sub, sub)))
        self.moist_sd = float(np.std(self.moist(sub, sub)))

    def strip(self, rows: np.ndarray, cols: np.ndarray, speckle: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """(current, future) codes of the given rows and columns; ``speckle`` adds per-pixel
        noise (x the field's sd) to the fields, like the mixed pixels and classification noise
        of a real 30 m map (which LZW compresses about 5x, not 30x)."""
        e, m, u, c = self.elev(rows, cols), self.moist(rows, cols), self.urban(rows, cols), self.change(rows, cols)
        if speckle:
            rng = np.random.default_rng([SEED, int(rows[0])])
            for f, sd in ((e, self.elev_sd), (m, self.moist_sd)):
                f += (speckle * sd) * rng.standard_normal(f.shape, dtype=np.float32)
        qe, qm, qu, qc = self.qe, self.qm, self.qu, self.qc
        cur = np.full(e.shape, CROP, dtype=np.uint8)
        cur[e >= qe[0.52]] = np.where(m[e >= qe[0.52]] > qm[0.5], SHRUB, GRASS)
        cur[e >= qe[0.62]] = FOREST
        cur[e >= qe[0.97]] = BARREN
        cur[(e < qe[0.4]) & (m < qm[0.3])] = GRASS
        cur[(e < qe[0.08]) & (m > qm[0.5])] = WETLAND
        cur[e < qe[0.05]] = WATER
        cur[(u > qu[0.95]) & (e < qe[0.7]) & (cur != WATER)] = URBAN

        fut = cur.copy()
        fut[(u > qu[0.9]) & (e < qe[0.7]) & (cur != WATER)] = URBAN  # urban growth
        defor = (cur == FOREST) & (c > qc[0.93])
        fut[defor] = np.where(e[defor] < qe[0.94], CROP, GRASS)  # clearing
        affor = np.isin(cur, (CROP, GRASS, SHRUB)) & (c < qc[0.05])
        fut[affor] = FOREST  # planting
        fut[(cur == CROP) & (e < qe[0.12]) & (m > qm[0.7])] = WETLAND  # wetland restoration

        # nodata: an irregular north-east corner, the same pixels in both years
        yy = rows[:, None] / self.n
        xx = cols[None, :] / self.n
        nod = (xx - yy + 0.04 * self.edge(rows, cols) / self.edge_sd) > 0.68
        cur[nod] = NODATA
        fut[nod] = NODATA
        return cur, fut


def _profile(n: int) -> dict:
    west = 500_000.0 - n * PIXEL / 2
    from affine import Affine

    return {
        "driver": "GTiff", "dtype": "uint8", "count": 1, "width": n, "height": n, "crs": CRS,
        "transform": Affine(PIXEL, 0.0, west, 0.0, -PIXEL, NORTH), "nodata": NODATA,
        "tiled": True, "blockxsize": TILE, "blockysize": TILE, "compress": "lzw", "bigtiff": "if_safer",
        "num_threads": "all_cpus",
    }


def make_pair(size: int, kind: str = "patchy", work: Path = WORK, log=print) -> dict:
    """Write (or reuse) the current/future pair; returns paths and facts about it."""
    import rasterio

    work.mkdir(parents=True, exist_ok=True)
    stem = f"lc_{kind}_{size}"
    paths = {YEARS[0]: work / f"{stem}_current.tif", YEARS[1]: work / f"{stem}_future.tif"}
    meta_path = work / f"{stem}.json"
    params = {"size": size, "kind": kind, "seed": SEED, "crs": CRS, "pixel": PIXEL, "north": NORTH, "speckle": SPECKLE, "version": 4}
    if meta_path.is_file() and all(p.is_file() for p in paths.values()):
        meta = json.loads(meta_path.read_text())
        if meta.get("params") == params:
            return _facts(meta, paths)
    log(f"  generating {kind} {size} x {size} pair in {work} ...")
    t0 = time.perf_counter()
    coarse = 50 if kind == "blocky" else 1
    land = Landscape(math.ceil(size / coarse))
    prof = _profile(size)
    counts = {y: np.zeros(256, dtype=np.int64) for y in YEARS}
    changed = 0
    with rasterio.open(paths[YEARS[0]], "w", **prof) as d0, rasterio.open(paths[YEARS[1]], "w", **prof) as d1:
        for r0 in range(0, size, TILE):
            h = min(TILE, size - r0)
            if coarse == 1:
                cur, fut = land.strip(np.arange(r0, r0 + h), np.arange(size), speckle=SPECKLE)
            else:
                crow = np.arange(r0, r0 + h) // coarse
                ucrow, inv = np.unique(crow, return_inverse=True)
                ccols = np.arange(land.n)
                c, f = land.strip(ucrow, ccols)
                cur = np.repeat(c[inv], coarse, axis=1)[:, :size]
                fut = np.repeat(f[inv], coarse, axis=1)[:, :size]
            win = rasterio.windows.Window(0, r0, size, h)
            d0.write(cur, 1, window=win)
            d1.write(fut, 1, window=win)
            counts[YEARS[0]] += np.bincount(cur.ravel(), minlength=256)
            counts[YEARS[1]] += np.bincount(fut.ravel(), minlength=256)
            changed += int(np.count_nonzero(cur != fut))
    meta = {
        "params": params,
        "generate_s": round(time.perf_counter() - t0, 1),
        "counts": {str(y): {str(k): int(v) for k, v in enumerate(c) if v} for y, c in counts.items()},
        "changed_pixels": changed,
    }
    meta_path.write_text(json.dumps(meta, indent=1))
    log(f"  ... written in {meta['generate_s']} s")
    return _facts(meta, paths)


def _facts(meta: dict, paths: dict) -> dict:
    import rasterio

    with rasterio.open(paths[YEARS[0]]) as src:
        bounds = tuple(src.bounds)
    counts = {int(y): {int(k): v for k, v in c.items()} for y, c in meta["counts"].items()}
    return {
        "paths": {y: str(p) for y, p in paths.items()},
        "bounds": bounds,
        "size": meta["params"]["size"],
        "kind": meta["params"]["kind"],
        "counts": counts,
        "valid_pixels": {y: sum(v for k, v in c.items() if k != NODATA) for y, c in counts.items()},
        "changed_pixels": meta["changed_pixels"],
        "disk_mb": round(sum(Path(p).stat().st_size for p in paths.values()) / 1e6, 1),
        "generate_s": meta["generate_s"],
    }


def write_pools(path: Path) -> Path:
    lines = ["lucode,lulc_name,c_above,c_below,c_soil,c_dead"]
    for code, (a, b, s, d) in sorted(POOLS.items()):
        lines.append(f"{code},{LABELS[code]},{a},{b},{s},{d}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def write_catalog(path: Path, pair: dict, legend: str) -> Path:
    lines = ["year,path,legend,source"]
    for y, p in sorted(pair["paths"].items()):
        lines.append(f"{y},{p},{legend},synthetic benchmark (benchmarks/generate.py seed {SEED})")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def make_sites(path: Path, pair: dict, n: int, seed: int = SEED + 1) -> Path:
    """``n`` small irregular polygons (5-20 ha: a jittered 10-16-gon), spread over the valid part
    of the map without overlaps (one per cell of a regular grid), as GeoJSON in UTM 50N."""
    import geopandas as gpd
    import shapely

    rng = np.random.default_rng(seed)
    left, bottom, right, top = pair["bounds"]
    width = right - left
    k = math.ceil(math.sqrt(n / 0.9))  # grid cells; some fall on nodata and are skipped
    cell = width / k
    geoms, ids = [], []
    cells = rng.permutation(k * k)
    for ci in cells:
        if len(geoms) == n:
            break
        r, c = divmod(int(ci), k)
        cx = left + (c + 0.5) * cell
        cy = top - (r + 0.5) * cell
        # skip the nodata corner (with a margin): x - y > 0.68 in map fractions
        if (c + 0.5) / k - (r + 0.5) / k > 0.58:
            continue
        area_m2 = rng.uniform(5, 20) * 1e4
        m = int(rng.integers(10, 17))
        ang = (np.arange(m) + rng.uniform(0.15, 0.85, m)) * (2 * np.pi / m)  # star-shaped: always simple
        rad = rng.uniform(0.7, 1.3, m)
        poly = shapely.Polygon(np.column_stack([np.cos(ang) * rad, np.sin(ang) * rad]))
        poly = shapely.affinity.scale(poly, *(2 * [math.sqrt(area_m2 / poly.area)]), origin=(0, 0))
        poly = shapely.affinity.rotate(poly, float(rng.uniform(0, 360)), origin=(0, 0))
        poly = shapely.affinity.translate(poly, cx, cy)
        poly = shapely.set_precision(poly, 0.01)  # cm grid: what GeoJSON keeps, so it stays valid there
        assert poly.is_valid and poly.geom_type == "Polygon"
        geoms.append(poly)
        ids.append(f"bench-{len(ids) + 1:04d}")
    gdf = gpd.GeoDataFrame(
        {"site_id": ids, "name": [f"Benchmark site {i}" for i in ids], "site_type": "reclaimed_mine",
         "ecozone": "subtropical_humid_asia", "baseline_year": YEARS[0]},
        geometry=geoms, crs=CRS,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    gdf.to_file(path, driver="GeoJSON")
    return path


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=8000)
    p.add_argument("--kind", choices=("patchy", "blocky"), default="patchy")
    a = p.parse_args()
    print(json.dumps(make_pair(a.size, a.kind), indent=1, default=str))
