"""Generate the SYNTHETIC carbon-sink demo data set in ``data/demo/``.

Nothing here is real CLCD or ESA WorldCover data.  The script builds small,
deterministic land-cover rasters that *imitate* annual CLCD maps near Wuhan
(Hubei, China) for 2018-2024, plus one site on an ESA-WorldCover-style
geographic grid for 2020-2024, and the site polygons that go with them.

Run it with::

    uv run python data/make_demo.py            # (re)write data/demo/
    uv run python data/make_demo.py --summary  # print per-site class counts

Everything derives from one numpy generator seeded with ``SEED``; running the
script twice writes byte-identical files.  No network access is needed.

Grids
-----
* CLCD tiles: CLCD's Albers equal-area grid (``CLCD_PROJ4``), 30 m pixels,
  pixel edges on multiples of 30 m, uint8, nodata 0.  Two tiles per year form
  one mosaic: tile ``a`` holds the reclaimed quarry and the forest park, tile
  ``b`` the lakeside wetland.  The tiles do not overlap.
* WorldCover tile: EPSG:4326, 1/12000 degree pixels on a grid aligned to
  multiples of 1/12000 degree, uint8, nodata 0.

The story per site
------------------
``wuhan-quarry-reclaim`` (CLCD, tile a)
    A limestone quarry.  2018-2019 bare rock (7) with an impervious (8) haul
    road; the road is ripped in 2021.  Reclamation over three years: trees
    are planted on the benches in three campaigns (2020, 2021, 2022), mapped
    as forest (2) from the year of planting, with grass (4) sown on the
    rest; by 2024 about 85% of the site is young forest, the rest grass with
    a small bare remnant.  Pixels are reclaimed in the order of a smooth
    "recovery score" (higher near the edges), so patches grow coherently and
    never go back.
``jiufeng-forest-park`` (CLCD, tile a)
    Mostly forest with shrub patches and a little cropland at its south-east
    edge.  Shrub patches regrow to forest year by year; a small patch is
    cleared for buildings (8) in 2021 and another is turned into cropland (1)
    in 2022.  In 2021 only, a 2 x 3 pixel block inside the park is nodata (0).
``liangzi-lakeside-wetland`` (CLCD, tile b)
    Lake water (5), a wetland (9) fringe, shore grassland (4) and cropland (1)
    on the landward side.  Cropland is restored to wetland from 2020 on,
    starting at the shore.  2020 is a flood year (as the real 2020 Yangtze
    flood): the lowest wetland fringe of the whole tile shows as water.
``daye-mine-wc`` (WorldCover)
    An open-pit mine: bare (60) with built-up (50) plant and road in 2020-2021
    (the plant is demolished in 2022); grass (30) is sown first and trees
    (10) planted on it from 2021 on, with a little shrubland (20); by 2024
    three quarters of the site is tree cover.

Outside the sites the tiles carry a plausible, mostly static landscape made
of thresholded smooth random fields (FFT gaussian smoothing of white noise):
forested hills, cropland, ponds, villages and roads; villages grow a little
each year outside the sites.  Tile ``a`` has a nodata triangle in its
north-east corner (no site touches it).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import shapely
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.features import rasterize
from rasterio.transform import Affine
from shapely.geometry import LineString, Point, Polygon, mapping, shape
from shapely.geometry.polygon import orient
from shapely.ops import nearest_points

# --------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------
SEED = 20181
HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "demo"
LANDCOVER_DIR = OUT_DIR / "landcover"
SOURCE = f"synthetic demo (data/make_demo.py, seed {SEED})"

CLCD_PROJ4 = (
    "+proj=aea +lat_0=0 +lon_0=105 +lat_1=25 +lat_2=47 "
    "+x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"
)
CLCD_RES = 30.0  # metres
WC_DEG_PER_PX = 12000  # pixels per degree: pixel size 1/12000 degree
CLCD_YEARS = tuple(range(2018, 2025))
WC_YEARS = tuple(range(2020, 2025))
MARGIN_PX = 45  # empty pixels between a site's bounding box and its tile edge
WC_MARGIN_PX = 60
NODATA = 0
BLOCK = 256  # tile size of tiled GeoTIFFs (used when the raster is wide enough)

# CLCD legend
CROP, FOREST, SHRUB, GRASS, WATER, SNOW, BARREN, IMPERVIOUS, WETLAND = range(1, 10)
# ESA WorldCover legend
WC_TREE, WC_SHRUB, WC_GRASS, WC_CROP, WC_BUILT, WC_BARE = 10, 20, 30, 40, 50, 60
WC_SNOW, WC_WATER, WC_WETLAND, WC_MANGROVE, WC_MOSS = 70, 80, 90, 95, 100
CLCD_TO_WC = {
    CROP: WC_CROP, FOREST: WC_TREE, SHRUB: WC_SHRUB, GRASS: WC_GRASS,
    WATER: WC_WATER, SNOW: WC_SNOW, BARREN: WC_BARE, IMPERVIOUS: WC_BUILT,
    WETLAND: WC_WETLAND,
}
CLCD_NAMES = {
    0: "nodata", 1: "cropland", 2: "forest", 3: "shrub", 4: "grassland",
    5: "water", 6: "snow/ice", 7: "barren", 8: "impervious", 9: "wetland",
}
WC_NAMES = {
    0: "nodata", 10: "tree cover", 20: "shrubland", 30: "grassland",
    40: "cropland", 50: "built-up", 60: "bare/sparse", 70: "snow/ice",
    80: "water", 90: "herbaceous wetland", 95: "mangroves", 100: "moss/lichen",
}
# Display colours (RGB) written as the GeoTIFF palette, for desktop GIS.
CLCD_COLORS = {
    1: (250, 227, 156), 2: (68, 111, 51), 3: (51, 160, 44), 4: (171, 211, 123),
    5: (30, 105, 180), 6: (166, 206, 227), 7: (207, 189, 163),
    8: (226, 66, 144), 9: (40, 180, 160),
}
WC_COLORS = {
    10: (0, 100, 0), 20: (255, 187, 34), 30: (255, 255, 76), 40: (240, 150, 255),
    50: (250, 0, 0), 60: (180, 180, 180), 70: (240, 240, 240), 80: (0, 100, 200),
    90: (0, 150, 160), 95: (0, 207, 117), 100: (250, 230, 160),
}

# Succession schedules: year -> (share at least grass, at least shrub, tree/forest),
# each share counted over all pixels of the site.
# (Planting: the tree share jumps in the planting years, straight from bare or grass.)
QUARRY_SCHEDULE: dict[int, tuple[float, float, float]] = {
    2018: (0.03, 0.00, 0.00),
    2019: (0.05, 0.00, 0.00),
    2020: (0.40, 0.00, 0.30),
    2021: (0.70, 0.00, 0.60),
    2022: (0.90, 0.00, 0.85),
    2023: (0.92, 0.00, 0.85),
    2024: (0.95, 0.00, 0.85),
}
DAYE_SCHEDULE: dict[int, tuple[float, float, float]] = {
    2020: (0.04, 0.00, 0.00),
    2021: (0.40, 0.00, 0.20),
    2022: (0.70, 0.50, 0.45),
    2023: (0.85, 0.68, 0.65),
    2024: (0.90, 0.80, 0.75),
}
# Forest park: share of the 2018 shrub pixels that have regrown to forest.
PARK_REGROWTH = {2018: 0.0, 2019: 0.08, 2020: 0.16, 2021: 0.25,
                 2022: 0.35, 2023: 0.45, 2024: 0.55}
PARK_CLEARING_YEAR = 2021  # forest -> impervious patch of PARK_CLEARING_PX pixels
PARK_CLEARING_PX = 20
PARK_CROP_YEAR = 2022  # forest -> cropland patch of PARK_CROP_PX pixels
PARK_CROP_PX = 28
PARK_NODATA_YEAR = 2021  # 2 x 3 nodata block inside the park
# Wetland: share of the 2018 cropland in the site restored to wetland.
WETLAND_RESTORED = {2018: 0.0, 2019: 0.0, 2020: 0.15, 2021: 0.35,
                    2022: 0.50, 2023: 0.65, 2024: 0.75}
FLOOD_YEAR = 2020
# Villages grow outside the sites: settlement threshold drop per year.
SETTLEMENT_GROWTH_PER_YEAR = 0.03


@dataclass(frozen=True)
class SiteSpec:
    """A demo site: where it is, how big, and its registry properties."""

    site_id: str
    name: str
    site_type: str
    baseline_year: int
    lon: float
    lat: float
    area_ha: float
    n_vertices: int
    elongation: float  # ratio of the long to the short axis
    rotation_deg: float
    tile: str  # "a", "b" (CLCD tiles) or "wc" (WorldCover)
    city: str
    owner: str
    project_type: str


SITES: tuple[SiteSpec, ...] = (
    SiteSpec("wuhan-quarry-reclaim", "Former limestone quarry, reclaimed",
             "reclaimed_mine", 2018, 114.550, 30.450, 62.0, 22, 1.5, 25.0, "a",
             "Wuhan", "Demo Reclamation Co.", "N0101"),
    SiteSpec("jiufeng-forest-park", "Jiufeng forest park", "forest", 2018,
             114.505, 30.478, 230.0, 26, 1.7, -35.0, "a",
             "Wuhan", "Demo Forest Park Administration", "N0201"),
    SiteSpec("liangzi-lakeside-wetland", "Lakeside wetland", "wetland", 2018,
             114.500, 30.250, 150.0, 24, 1.6, 70.0, "b",
             "Wuhan", "Demo Wetland Reserve Office", "N0301"),
    SiteSpec("daye-mine-wc", "Daye open-pit mine (WorldCover legend)",
             "reclaimed_mine", 2020, 114.950, 30.100, 45.0, 18, 1.4, -10.0, "wc",
             "Huangshi", "Demo Mining Group", "N0101"),
)

# Registry metadata (made up for the demo; eligibility under a methodology is not assessed).
REGISTRY: dict[str, dict[str, object]] = {
    "wuhan-quarry-reclaim": {"project_name": "武汉废弃采石场复绿碳汇示范项目 (demo)",
                             "methodology": "CCER-14-001-V01", "verra_project_id": "9001",
                             "verra_methodology": "VM0047", "country": "CN", "leakage_pct": 5.0},
    "jiufeng-forest-park": {"project_name": "九峰森林公园碳汇示范项目 (demo)",
                            "methodology": "CCER-14-001-V01", "verra_project_id": "9002",
                            "verra_methodology": "VM0047", "country": "CN"},
    "liangzi-lakeside-wetland": {"project_name": "梁子湖滨湿地恢复示范项目 (demo)",
                                 "methodology": "CCER-14-003-V01", "verra_project_id": "9003",
                                 "verra_methodology": "VM0033", "country": "CN"},
    "daye-mine-wc": {"project_name": "大冶露天矿复垦碳汇示范项目 (demo)",
                     "methodology": "CCER-14-001-V01", "verra_project_id": "9004",
                     "verra_methodology": "VM0047", "country": "CN"},
}

ALBERS = CRS.from_proj4(CLCD_PROJ4)
WGS84 = CRS.from_epsg(4326)
TO_ALBERS = Transformer.from_crs("EPSG:4326", CLCD_PROJ4, always_xy=True)
TO_LONLAT = Transformer.from_crs(CLCD_PROJ4, "EPSG:4326", always_xy=True)


# --------------------------------------------------------------------------
# Small raster helpers (numpy only)
# --------------------------------------------------------------------------
def smooth_field(rng: np.random.Generator, shape: tuple[int, int],
                 sigma: float) -> np.ndarray:
    """White noise smoothed with a gaussian (via FFT), standardised to mean 0, sd 1.

    The noise is padded by 3 sigma before the (periodic) FFT convolution and
    cropped afterwards, so opposite edges are not correlated.
    """
    pad = int(3 * sigma) + 1
    h, w = shape[0] + 2 * pad, shape[1] + 2 * pad
    noise = rng.standard_normal((h, w))
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    kernel = np.exp(-2.0 * (np.pi * sigma) ** 2 * (fx**2 + fy**2))
    field = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=(h, w))
    field = field[pad:pad + shape[0], pad:pad + shape[1]]
    return (field - field.mean()) / field.std()


def pixel_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index arrays of a raster of ``shape``."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    return rows.astype(float), cols.astype(float)


def dilate(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    """Binary dilation with the 3 x 3 (8-neighbour) structuring element."""
    out = mask.copy()
    for _ in range(iterations):
        padded = np.pad(out, 1)
        grown = np.zeros_like(padded)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                grown |= np.roll(np.roll(padded, dr, axis=0), dc, axis=1)
        out = grown[1:-1, 1:-1]
    return out


def edge_distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance (pixels) from each True pixel to the nearest False pixel."""
    padded = np.pad(mask, 1)
    touching = np.zeros_like(padded)
    for axis in (0, 1):
        for step in (-1, 1):
            touching |= np.roll(padded, step, axis=axis)
    border_r, border_c = np.nonzero(~padded & touching)
    in_r, in_c = np.nonzero(padded)
    dist = np.sqrt(((in_r[:, None] - border_r[None, :]) ** 2
                    + (in_c[:, None] - border_c[None, :]) ** 2).min(axis=1))
    out = np.zeros(padded.shape)
    out[in_r, in_c] = dist
    return out[1:-1, 1:-1]


def rank_fraction(score: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Rank of each masked pixel by descending score, as a share in [0, 1).

    Ties are broken by pixel order (stable sort), so the result is deterministic.
    Pixels outside ``mask`` get 1.0.
    """
    out = np.ones(score.shape)
    idx = np.flatnonzero(mask)
    order = np.argsort(-score.ravel()[idx], kind="stable")
    ranks = np.empty(idx.size)
    ranks[order] = np.arange(idx.size) / idx.size
    out.ravel()[idx] = ranks
    return out


def burn_lines(shape: tuple[int, int], lines: Iterable[LineString],
               half_width: float) -> np.ndarray:
    """Mask of pixels whose centres lie within ``half_width`` px of the lines.

    Line coordinates are in pixel space: x = column, y = row.
    """
    geoms = [(line.buffer(half_width), 1) for line in lines]
    burned = rasterize(geoms, out_shape=shape, transform=Affine.identity(),
                       fill=0, dtype="uint8")
    return burned.astype(bool)


def gaussian_bumps(shape: tuple[int, int],
                   bumps: Iterable[tuple[float, float, float]]) -> np.ndarray:
    """Sum of gaussian bumps given as (row, col, radius in px)."""
    rows, cols = pixel_grid(shape)
    out = np.zeros(shape)
    for r0, c0, radius in bumps:
        out += np.exp(-((rows - r0) ** 2 + (cols - c0) ** 2) / (2.0 * radius**2))
    return out


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and (rows, cols)."""

    crs: CRS
    transform: Affine
    shape: tuple[int, int]

    def rowcol(self, x: float, y: float) -> tuple[float, float]:
        """Fractional (row, col) of a point given in the grid's CRS."""
        col, row = ~self.transform * (x, y)
        return row, col


# --------------------------------------------------------------------------
# Site polygons
# --------------------------------------------------------------------------
def site_polygon_albers(rng: np.random.Generator, spec: SiteSpec) -> Polygon:
    """An irregular, star-shaped (hence valid) outline around the site centre.

    Radius r(theta) = 1 + a sum of a few random harmonics, stretched and
    rotated, then scaled so the outline encloses ``spec.area_ha``.
    """
    cx, cy = TO_ALBERS.transform(spec.lon, spec.lat)
    n = spec.n_vertices
    theta = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * 2 * np.pi / n
    radius = np.ones(n)
    for k, amp in zip((2, 3, 4, 5), (0.10, 0.08, 0.06, 0.04), strict=True):
        radius += amp * rng.uniform(0.5, 1.0) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    radius *= 1.0 + rng.uniform(-0.04, 0.04, n)
    x = radius * np.cos(theta) * np.sqrt(spec.elongation)
    y = radius * np.sin(theta) / np.sqrt(spec.elongation)
    rot = np.deg2rad(spec.rotation_deg)
    xr = x * np.cos(rot) - y * np.sin(rot)
    yr = x * np.sin(rot) + y * np.cos(rot)
    unit_area = Polygon(zip(xr, yr, strict=True)).area
    scale = np.sqrt(spec.area_ha * 1e4 / unit_area)
    return Polygon(zip(cx + scale * xr, cy + scale * yr, strict=True))


def to_lonlat(poly_albers: Polygon) -> Polygon:
    """Albers polygon -> lon/lat polygon, rounded to 1e-6 degree, CCW exterior."""
    lonlat = shapely.transform(poly_albers, TO_LONLAT.transform, interleaved=False)
    coords = [(round(x, 6), round(y, 6)) for x, y in lonlat.exterior.coords]
    return orient(Polygon(coords), sign=1.0)


def reproject_polygon(poly_lonlat: Polygon, crs: CRS) -> Polygon:
    """Reproject a lon/lat polygon to ``crs`` (identity for EPSG:4326)."""
    if crs == WGS84:
        return poly_lonlat
    return shapely.transform(poly_lonlat, TO_ALBERS.transform, interleaved=False)


def area_ha(poly_lonlat: Polygon) -> float:
    """Area in hectares, measured in the (equal-area) Albers projection."""
    return shapely.transform(poly_lonlat, TO_ALBERS.transform, interleaved=False).area / 1e4


def site_mask(poly_lonlat: Polygon, grid: Grid) -> np.ndarray:
    """Pixels whose centre lies inside the site polygon (GDAL's default rule)."""
    geom = reproject_polygon(poly_lonlat, grid.crs)
    burned = rasterize([(geom, 1)], out_shape=grid.shape, transform=grid.transform,
                       fill=0, dtype="uint8", all_touched=False)
    return burned.astype(bool)


def write_sites(path: Path, polygons: dict[str, Polygon]) -> None:
    """Write the sites as an RFC 7946 FeatureCollection (lon/lat, no 'crs' member)."""
    features = []
    for spec in SITES:
        features.append({
            "type": "Feature",
            "id": spec.site_id,
            "properties": {
                "site_id": spec.site_id,
                "name": spec.name,
                "site_type": spec.site_type,
                "ecozone": "subtropical_humid_asia",
                "baseline_year": spec.baseline_year,
                "province": "Hubei",
                "city": spec.city,
                "owner": spec.owner,
                "project_type": spec.project_type,
                **REGISTRY[spec.site_id],
            },
            "geometry": mapping(polygons[spec.site_id]),
        })
    text = json.dumps({"type": "FeatureCollection", "features": features}, indent=2)
    # Put each [lon, lat] pair on one line to keep the file short and readable.
    text = re.sub(r"\[\s+(-?[\d.]+),\s+(-?[\d.]+)\s+\]", r"[\1, \2]", text)
    path.write_text(text + "\n", encoding="utf-8")


# --------------------------------------------------------------------------
# Grids
# --------------------------------------------------------------------------
def clcd_grid(polys_albers: Iterable[Polygon], margin_px: int) -> Grid:
    """Albers 30 m grid around the polygons, edges snapped to multiples of 30 m."""
    bounds = np.array([p.bounds for p in polys_albers])
    minx, miny = bounds[:, 0].min(), bounds[:, 1].min()
    maxx, maxy = bounds[:, 2].max(), bounds[:, 3].max()
    left = np.floor(minx / CLCD_RES) * CLCD_RES - margin_px * CLCD_RES
    bottom = np.floor(miny / CLCD_RES) * CLCD_RES - margin_px * CLCD_RES
    right = np.ceil(maxx / CLCD_RES) * CLCD_RES + margin_px * CLCD_RES
    top = np.ceil(maxy / CLCD_RES) * CLCD_RES + margin_px * CLCD_RES
    shape = (round((top - bottom) / CLCD_RES), round((right - left) / CLCD_RES))
    transform = Affine(CLCD_RES, 0.0, float(left), 0.0, -CLCD_RES, float(top))
    return Grid(ALBERS, transform, shape)


def worldcover_grid(poly_lonlat: Polygon, margin_px: int) -> Grid:
    """EPSG:4326 grid of 1/12000 degree pixels aligned to multiples of 1/12000."""
    minx, miny, maxx, maxy = poly_lonlat.bounds
    col0 = int(np.floor(minx * WC_DEG_PER_PX)) - margin_px
    col1 = int(np.ceil(maxx * WC_DEG_PER_PX)) + margin_px
    row_top = int(np.ceil(maxy * WC_DEG_PER_PX)) + margin_px
    row_bottom = int(np.floor(miny * WC_DEG_PER_PX)) - margin_px
    size = 1.0 / WC_DEG_PER_PX
    transform = Affine(size, 0.0, col0 / WC_DEG_PER_PX, 0.0, -size,
                       row_top / WC_DEG_PER_PX)
    return Grid(WGS84, transform, (row_top - row_bottom, col1 - col0))


# --------------------------------------------------------------------------
# Background landscapes
# --------------------------------------------------------------------------
@dataclass
class Landscape:
    """Baseline classes (CLCD codes) plus what changes over the years."""

    base: np.ndarray
    settlement: np.ndarray  # settlement potential; villages where it exceeds a threshold
    settlement_threshold: float
    may_urbanise: np.ndarray  # bool: pixels where villages may grow

    def for_year(self, year: int, first_year: int) -> np.ndarray:
        """The background for ``year``: the baseline plus grown villages."""
        classes = self.base.copy()
        threshold = self.settlement_threshold - SETTLEMENT_GROWTH_PER_YEAR * (year - first_year)
        classes[(self.settlement > threshold) & self.may_urbanise] = IMPERVIOUS
        return classes


def hill_landscape(rng: np.random.Generator, shape: tuple[int, int],
                   hills: Iterable[tuple[float, float, float]],
                   roads: Iterable[LineString], protected: np.ndarray) -> Landscape:
    """Forested hills (raised around ``hills``) over cropland, with ponds and villages."""
    elevation = smooth_field(rng, shape, 30.0) + 2.2 * gaussian_bumps(shape, hills)
    elevation += 0.35 * smooth_field(rng, shape, 6.0)
    fringe_noise = smooth_field(rng, shape, 3.0)
    meadow = smooth_field(rng, shape, 4.0)
    ponds = smooth_field(rng, shape, 5.0)
    settlement = smooth_field(rng, shape, 5.0)

    q = np.quantile(elevation, [0.40, 0.50, 0.58])
    base = np.full(shape, CROP, dtype=np.uint8)
    base[(elevation > q[1]) & (fringe_noise > 0.0)] = SHRUB
    base[elevation > q[2]] = FOREST
    base[(base == CROP) & (meadow > 1.5)] = GRASS
    base[(ponds > 1.9) & (elevation < q[0])] = WATER
    lowland = (elevation < q[1]) & (base != WATER)
    threshold = 1.55
    base[(settlement > threshold) & lowland] = IMPERVIOUS
    base[burn_lines(shape, roads, 0.55)] = IMPERVIOUS
    may_urbanise = lowland & np.isin(base, (CROP, GRASS)) & ~protected
    return Landscape(base, settlement, threshold, may_urbanise)


@dataclass
class LakeShore:
    """Tile b: a lake to the east of a shoreline, and the shoreline coordinate."""

    landscape: Landscape
    shore_coord: np.ndarray  # px; grows towards the lake
    flood_level: float  # wetland pixels above this coordinate flood in FLOOD_YEAR


def lake_landscape(rng: np.random.Generator, shape: tuple[int, int],
                   centre_rc: tuple[float, float], site: np.ndarray,
                   roads: Iterable[LineString], protected: np.ndarray) -> LakeShore:
    """Lake, wetland fringe, shore meadows, cropland with fish ponds and villages.

    Class boundaries follow a wavy shoreline coordinate; its thresholds are
    taken as quantiles *within the site* so the site straddles the shore.
    """
    rows, cols = pixel_grid(shape)
    angle = np.deg2rad(-20.0)  # the lake lies towards east-south-east
    along = (cols - centre_rc[1]) * np.cos(angle) - (rows - centre_rc[0]) * np.sin(angle)
    coord = along + 14.0 * smooth_field(rng, shape, 18.0) + 2.0 * smooth_field(rng, shape, 4.0)
    meadow = smooth_field(rng, shape, 3.0)
    ponds = smooth_field(rng, shape, 4.0)
    hills = smooth_field(rng, shape, 20.0)
    settlement = smooth_field(rng, shape, 5.0)

    in_site = coord[site]
    lake_edge, wet_edge, meadow_edge = np.quantile(in_site, [0.80, 0.50, 0.35])
    base = np.full(shape, CROP, dtype=np.uint8)
    base[coord > lake_edge] = WATER
    base[(coord > wet_edge) & (coord <= lake_edge)] = WETLAND
    shore_band = (coord > meadow_edge - 6.0) & (coord <= wet_edge)
    base[shore_band & (meadow > -0.3)] = GRASS
    inland = (coord < meadow_edge - 8.0) & ~protected  # no ponds/villages in the site
    base[inland & (ponds > 1.3)] = WATER  # fish ponds
    base[inland & (hills > 1.2)] = FOREST
    threshold = 1.6
    village_land = inland & (base == CROP)
    base[village_land & (settlement > threshold)] = IMPERVIOUS
    base[burn_lines(shape, roads, 0.55) & (coord <= wet_edge)] = IMPERVIOUS
    landscape = Landscape(base, settlement, threshold, village_land & ~protected)
    flood_level = lake_edge - 0.3 * (lake_edge - wet_edge)
    return LakeShore(landscape, coord, flood_level)


# --------------------------------------------------------------------------
# Site dynamics
# --------------------------------------------------------------------------
def succession(rank: np.ndarray, mask: np.ndarray, shares: tuple[float, float, float],
               classes: tuple[int, int, int, int]) -> np.ndarray:
    """Classes of a recovering site for one year.

    ``rank`` orders the pixels (0 = recovers first); ``shares`` are the
    shares at least grass, at least shrub, and tree; ``classes`` are the
    codes for (bare, grass, shrub, tree).
    """
    bare, grass, shrub, tree = classes
    at_least_grass, at_least_shrub, trees = shares
    out = np.zeros(mask.shape, dtype=np.uint8)
    out[mask] = bare
    out[mask & (rank < at_least_grass)] = grass
    out[mask & (rank < at_least_shrub)] = shrub
    out[mask & (rank < trees)] = tree
    return out


def recovery_rank(rng: np.random.Generator, mask: np.ndarray, last: np.ndarray,
                  patch_sigma: float) -> np.ndarray:
    """Recovery order of a mine site: smooth patches, favouring the edges.

    ``patch_sigma`` (px) sets the patch size; pixels in ``last`` (roads,
    plant) recover last.
    """
    patches = smooth_field(rng, mask.shape, patch_sigma)
    dist = edge_distance(mask)
    edge_bias = 1.0 - dist / dist.max()
    score = 0.6 * patches + 1.2 * edge_bias
    score[last] = score[mask].min() - 1.0 - edge_distance(last)[last]
    return rank_fraction(score, mask)


def disk(shape: tuple[int, int], centre_rc: tuple[int, int], radius: float) -> np.ndarray:
    """Pixels whose centre lies within ``radius`` px of ``centre_rc``."""
    rows, cols = pixel_grid(shape)
    return (rows - centre_rc[0]) ** 2 + (cols - centre_rc[1]) ** 2 <= radius**2


def patch_near(candidates: np.ndarray, centre_rc: tuple[int, int], n_pixels: int) -> np.ndarray:
    """The ``n_pixels`` candidate pixels nearest to ``centre_rc`` (a compact patch)."""
    rows, cols = pixel_grid(candidates.shape)
    dist2 = (rows - centre_rc[0]) ** 2 + (cols - centre_rc[1]) ** 2
    idx = np.flatnonzero(candidates)
    nearest = idx[np.argsort(dist2.ravel()[idx], kind="stable")[:n_pixels]]
    out = np.zeros(candidates.shape, dtype=bool)
    out.ravel()[nearest] = True
    return out


def pick_pixel(candidates: np.ndarray, score: np.ndarray) -> tuple[int, int]:
    """The candidate pixel with the highest score (first one on ties)."""
    flat = np.where(candidates.ravel(), score.ravel(), -np.inf)
    row, col = np.unravel_index(int(np.argmax(flat)), candidates.shape)
    return int(row), int(col)


@dataclass
class ForestPark:
    """Baseline park classes and the masks of its changes."""

    base: np.ndarray  # classes inside the park, 0 outside
    regrowth_rank: np.ndarray  # share rank among the 2018 shrub pixels
    clearing: np.ndarray
    new_cropland: np.ndarray
    nodata_gap: np.ndarray

    def for_year(self, year: int) -> np.ndarray:
        out = self.base.copy()
        out[(self.base == SHRUB) & (self.regrowth_rank < PARK_REGROWTH[year])] = FOREST
        if year >= PARK_CLEARING_YEAR:
            out[self.clearing] = IMPERVIOUS
        if year >= PARK_CROP_YEAR:
            out[self.new_cropland] = CROP
        if year == PARK_NODATA_YEAR:
            out[self.nodata_gap] = NODATA
        return out


def forest_park(rng: np.random.Generator, mask: np.ndarray,
                lowland_dir: tuple[float, float]) -> ForestPark:
    """Forest with shrub patches and cropland on the edge facing ``lowland_dir``.

    ``lowland_dir`` is a (drow, dcol) direction.
    """
    texture = smooth_field(rng, mask.shape, 4.0)
    dist = edge_distance(mask)
    rows, cols = pixel_grid(mask.shape)
    r0, c0 = rows[mask].mean(), cols[mask].mean()
    toward_lowland = (rows - r0) * lowland_dir[0] + (cols - c0) * lowland_dir[1]
    reach = toward_lowland[mask].max()

    base = np.zeros(mask.shape, dtype=np.uint8)
    base[mask] = FOREST
    shrub = mask & (texture > np.quantile(texture[mask], 0.84))
    base[shrub] = SHRUB
    cropland = mask & (dist <= 3.5) & (toward_lowland > 0.45 * reach)
    base[cropland] = CROP
    # Shrub patches regrow from their rims inwards: lowest texture first.
    regrowth_rank = rank_fraction(-texture, base == SHRUB)

    forest = base == FOREST
    seed = pick_pixel(forest & (dist >= 3) & (dist <= 4), -rows)  # north edge
    clearing = patch_near(forest, seed, PARK_CLEARING_PX)
    seed = pick_pixel(forest & (dist >= 2) & (dist <= 3), -cols + 0.5 * rows)  # west
    new_cropland = patch_near(forest & ~clearing, seed, PARK_CROP_PX)
    centre = pick_pixel(forest & (dist > 4), dist + 0.01 * texture)
    gap = np.zeros(mask.shape, dtype=bool)
    gap[centre[0]:centre[0] + 2, centre[1]:centre[1] + 3] = True
    gap &= forest & ~clearing & ~new_cropland
    return ForestPark(base, regrowth_rank, clearing, new_cropland, gap)


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------
def write_raster(path: Path, data: np.ndarray, grid: Grid, legend: str, year: int) -> None:
    """Write a single-band uint8 GeoTIFF (DEFLATE, nodata 0, palette, tags)."""
    height, width = grid.shape
    profile = {
        "driver": "GTiff", "width": width, "height": height, "count": 1,
        "dtype": "uint8", "crs": grid.crs, "transform": grid.transform,
        "nodata": NODATA, "compress": "deflate", "zlevel": 9,
    }
    if width >= BLOCK:
        profile.update(tiled=True, blockxsize=BLOCK, blockysize=BLOCK)
    colors = CLCD_COLORS if legend == "clcd" else WC_COLORS
    colormap = {i: (0, 0, 0, 0) for i in range(256)}
    colormap.update({code: (*rgb, 255) for code, rgb in colors.items()})
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
        dst.write_colormap(1, colormap)
        dst.set_band_description(1, f"land cover ({legend} legend)")
        dst.update_tags(LEGEND=legend, YEAR=str(year), SOURCE=SOURCE,
                        NOTE="SYNTHETIC demo data, not real land-cover data")


def write_catalog(path: Path, rows: list[tuple[int, str, str]]) -> None:
    """The catalog; CLCD rows name the synthetic accuracy sample (``ACCURACY_FILE``)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["year", "path", "legend", "source", "accuracy"])
        for year, rel_path, legend in sorted(rows):
            writer.writerow([year, rel_path, legend, SOURCE, ACCURACY_FILE if legend == "clcd" else ""])


# --------------------------------------------------------------------------
# Accuracy-assessment sample (SYNTHETIC)
# --------------------------------------------------------------------------
ACCURACY_FILE = "clcd_accuracy.csv"
ACCURACY_SEED = SEED + 1
#: Sample units per map class (the strata of a stratified random sample).
ACCURACY_UNITS = {CROP: 60, FOREST: 80, SHRUB: 40, GRASS: 50, WATER: 50, SNOW: 20, BARREN: 40,
                  IMPERVIOUS: 50, WETLAND: 40}
#: Per map class, the probability of each reference class of a sample unit. The diagonal (the
#: user's accuracies) is set so that the overall accuracy is near the 79.31% published for CLCD
#: (Yang and Huang 2021, Earth Syst. Sci. Data 13: 3907-3925); the confusions are the usual
#: neighbours (shrub with forest and grass, wetland with water and grass, barren with grass and
#: built-up). Invented for the demo: it describes no real assessment.
ACCURACY_RATES = {
    CROP: {CROP: 0.86, GRASS: 0.06, IMPERVIOUS: 0.04, FOREST: 0.04},
    FOREST: {FOREST: 0.88, SHRUB: 0.06, GRASS: 0.03, CROP: 0.03},
    SHRUB: {SHRUB: 0.55, FOREST: 0.25, GRASS: 0.20},
    GRASS: {GRASS: 0.62, CROP: 0.14, SHRUB: 0.10, BARREN: 0.08, FOREST: 0.06},
    WATER: {WATER: 0.92, WETLAND: 0.08},
    SNOW: {SNOW: 0.80, BARREN: 0.20},
    BARREN: {BARREN: 0.75, GRASS: 0.15, IMPERVIOUS: 0.10},
    IMPERVIOUS: {IMPERVIOUS: 0.86, CROP: 0.08, BARREN: 0.06},
    WETLAND: {WETLAND: 0.58, WATER: 0.22, GRASS: 0.12, CROP: 0.08},
}


def write_accuracy_sample(path: Path) -> None:
    """A synthetic CLCD accuracy-assessment sample ``map_code,reference_code,count``: each
    stratum's units drawn (multinomial) from ``ACCURACY_RATES`` with ``ACCURACY_SEED``."""
    rng = np.random.default_rng(ACCURACY_SEED)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["map_code", "reference_code", "count"])
        for code, rates in ACCURACY_RATES.items():
            refs = list(rates)
            counts = rng.multinomial(ACCURACY_UNITS[code], [rates[r] for r in refs])
            for ref, n in sorted(zip(refs, counts, strict=True)):
                if n:
                    writer.writerow([code, ref, int(n)])


# --------------------------------------------------------------------------
# Tiles
# --------------------------------------------------------------------------
def make_tile_a(rng: np.random.Generator, quarry: Polygon,
                park: Polygon) -> tuple[Grid, dict[int, np.ndarray]]:
    """Tile a: the reclaimed quarry and the forest park, 2018-2024."""
    quarry_ab = reproject_polygon(quarry, ALBERS)
    park_ab = reproject_polygon(park, ALBERS)
    grid = clcd_grid([quarry_ab, park_ab], MARGIN_PX)
    q_mask, p_mask = site_mask(quarry, grid), site_mask(park, grid)
    sites = q_mask | p_mask
    q_rc = grid.rowcol(*quarry_ab.centroid.coords[0])
    p_rc = grid.rowcol(*park_ab.centroid.coords[0])

    # Main road between the two sites, from the south-west to the north-east,
    # and a country road along the south; the quarry haul road joins the first.
    mid = np.add(q_rc, p_rc)[::-1] / 2.0  # (col, row)
    along = np.subtract(q_rc, p_rc)[::-1]
    perp = np.array([along[1], -along[0]]) / np.hypot(*along)
    if perp[1] < 0:  # point south (down)
        perp = -perp
    bend = 0.08 * along
    main_road = LineString([mid + 600 * perp, mid + 50 * perp + bend, mid,
                            mid - 50 * perp - bend, mid - 600 * perp])
    h, w = grid.shape
    south_road = LineString([(0, 0.93 * h), (0.4 * w, 0.95 * h), (w, 0.91 * h)])
    quarry_centre = Point(q_rc[1], q_rc[0])
    road_end = nearest_points(main_road, quarry_centre)[0]
    haul_road = LineString([quarry_centre.coords[0], road_end.coords[0]])
    haul = burn_lines(grid.shape, [haul_road], 0.8)

    hills = [(q_rc[0], q_rc[1], 35.0), (p_rc[0], p_rc[1], 55.0)]
    landscape = hill_landscape(rng, grid.shape, hills, [main_road, south_road],
                               dilate(sites, 3))
    quarry_rank = recovery_rank(rng, q_mask, haul & q_mask, patch_sigma=2.5)
    to_quarry = along / np.hypot(*along)  # the park's lowland side faces the road
    park_state = forest_park(rng, p_mask, lowland_dir=(to_quarry[1], to_quarry[0]))

    rows, cols = pixel_grid(grid.shape)
    corner = (w - 1 - cols) + rows < 0.3 * min(h, w)  # north-east corner
    if (dilate(sites, 10) & corner).any():
        raise RuntimeError("the nodata corner of tile a touches a site")

    years: dict[int, np.ndarray] = {}
    for year in CLCD_YEARS:
        classes = landscape.for_year(year, CLCD_YEARS[0])
        classes[haul & ~q_mask] = IMPERVIOUS
        quarry_classes = succession(quarry_rank, q_mask, QUARRY_SCHEDULE[year],
                                    (BARREN, GRASS, SHRUB, FOREST))
        if year <= 2020:
            quarry_classes[haul & q_mask] = IMPERVIOUS
        classes[q_mask] = quarry_classes[q_mask]
        classes[p_mask] = park_state.for_year(year)[p_mask]
        classes[corner] = NODATA
        years[year] = classes
    return grid, years


def make_tile_b(rng: np.random.Generator,
                wetland: Polygon) -> tuple[Grid, dict[int, np.ndarray]]:
    """Tile b: the lakeside wetland, 2018-2024."""
    wetland_ab = reproject_polygon(wetland, ALBERS)
    grid = clcd_grid([wetland_ab], MARGIN_PX)
    mask = site_mask(wetland, grid)
    centre_rc = grid.rowcol(*wetland_ab.centroid.coords[0])
    h, w = grid.shape
    # A road on the landward (west) side, running north-south, and a lane.
    road = LineString([(0.12 * w, 0), (0.16 * w, 0.5 * h), (0.10 * w, h)])
    lane = LineString([(0, 0.8 * h), (0.16 * w, 0.78 * h)])
    shore = lake_landscape(rng, grid.shape, centre_rc, mask, [road, lane],
                           dilate(mask, 3))
    base = shore.landscape.base
    cropland = mask & (base == CROP)
    restore_rank = rank_fraction(shore.shore_coord, cropland)  # shore side first
    low_wetland = (base == WETLAND) & (shore.shore_coord > shore.flood_level)

    years: dict[int, np.ndarray] = {}
    for year in CLCD_YEARS:
        classes = shore.landscape.for_year(year, CLCD_YEARS[0])
        classes[cropland & (restore_rank < WETLAND_RESTORED[year])] = WETLAND
        if year == FLOOD_YEAR:
            classes[low_wetland] = WATER
        years[year] = classes
    return grid, years


def make_worldcover(rng: np.random.Generator,
                    mine: Polygon) -> tuple[Grid, dict[int, np.ndarray]]:
    """The WorldCover-legend tile around the Daye mine, 2020-2024."""
    grid = worldcover_grid(mine, WC_MARGIN_PX)
    mask = site_mask(mine, grid)
    dist = edge_distance(mask)
    h, w = grid.shape
    rows, cols = pixel_grid(grid.shape)
    r0, c0 = rows[mask].mean(), cols[mask].mean()

    # Processing plant near the east edge of the pit, a road east to the town.
    plant_seed = pick_pixel(mask & (dist >= 6) & (dist <= 9), cols)
    plant = disk(grid.shape, plant_seed, 6.5) & mask
    road = LineString([(plant_seed[1], plant_seed[0]), (w, plant_seed[0] + 25)])
    main_road = LineString([(0.2 * w, h), (0.9 * w, 0.93 * h), (w, 0.6 * h)])
    plant_road = burn_lines(grid.shape, [road], 1.0)
    built = plant | (plant_road & mask)

    landscape = hill_landscape(rng, grid.shape, [(r0, c0, 70.0)], [main_road],
                               dilate(mask, 4))
    rank = recovery_rank(rng, mask, built, patch_sigma=7.0)

    to_worldcover = np.zeros(256, dtype=np.uint8)
    for clcd, wc in CLCD_TO_WC.items():
        to_worldcover[clcd] = wc
    years: dict[int, np.ndarray] = {}
    for year in WC_YEARS:
        classes = landscape.for_year(year, WC_YEARS[0])
        classes[plant_road] = IMPERVIOUS
        site_classes = succession(rank, mask, DAYE_SCHEDULE[year],
                                  (BARREN, GRASS, SHRUB, FOREST))
        if year <= 2021:
            site_classes[built] = IMPERVIOUS
        classes[mask] = site_classes[mask]
        years[year] = to_worldcover[classes]
    return grid, years


# --------------------------------------------------------------------------
# Summary (reads the written files back)
# --------------------------------------------------------------------------
def load_sites(path: Path) -> dict[str, tuple[dict, Polygon]]:
    collection = json.loads(path.read_text(encoding="utf-8"))
    return {f["properties"]["site_id"]: (f["properties"], shape(f["geometry"]))
            for f in collection["features"]}


def class_counts(catalog: Path, sites_path: Path
                 ) -> dict[str, tuple[str, dict[int, dict[int, int]]]]:
    """Per site: (legend, {year: {class: pixel count}}), centre of pixel inside.

    Each site is counted in the catalog raster(s) whose bounds contain it.
    """
    sites = load_sites(sites_path)
    with catalog.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    counts: dict[str, tuple[str, dict[int, dict[int, int]]]] = {}
    for row in rows:
        with rasterio.open(catalog.parent / row["path"]) as src:
            grid = Grid(src.crs, src.transform, src.shape)
            data = src.read(1)
            for sid, (_, poly) in sites.items():
                geom = reproject_polygon(poly, src.crs)
                if not Polygon.from_bounds(*src.bounds).contains(geom):
                    continue
                values, n = np.unique(data[site_mask(poly, grid)], return_counts=True)
                per_year = counts.setdefault(sid, (row["legend"], {}))[1]
                per_year[int(row["year"])] = dict(zip(values.tolist(), n.tolist(), strict=True))
    return counts


def summary_markdown(catalog: Path, sites_path: Path) -> str:
    """Markdown tables of per-site, per-year class counts."""
    sites = load_sites(sites_path)
    parts = []
    for sid, (legend, per_year) in class_counts(catalog, sites_path).items():
        names = CLCD_NAMES if legend == "clcd" else WC_NAMES
        codes = sorted({c for year_counts in per_year.values() for c in year_counts})
        props, poly = sites[sid]
        lines = [f"**{sid}** ({props['name']}; {area_ha(poly):.1f} ha; {legend} legend)",
                 "",
                 "| year | " + " | ".join(f"{c} {names[c]}" for c in codes) + " | total |",
                 "|" + " ---: |" * (len(codes) + 2)]
        for year in sorted(per_year):
            cells = [str(per_year[year].get(c, 0)) for c in codes]
            lines.append(f"| {year} | " + " | ".join(cells)
                         + f" | {sum(per_year[year].values())} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------
def build() -> None:
    rng = np.random.default_rng(SEED)
    LANDCOVER_DIR.mkdir(parents=True, exist_ok=True)

    polygons: dict[str, Polygon] = {}
    for spec in SITES:
        poly = to_lonlat(site_polygon_albers(rng, spec))
        if not poly.is_valid:
            raise RuntimeError(f"invalid polygon for {spec.site_id}")
        polygons[spec.site_id] = poly
    write_sites(OUT_DIR / "sites.geojson", polygons)

    tiles: list[tuple[str, str, Callable[[], tuple[Grid, dict[int, np.ndarray]]]]] = [
        ("clcd_{year}_a.tif", "clcd", lambda: make_tile_a(
            rng, polygons["wuhan-quarry-reclaim"], polygons["jiufeng-forest-park"])),
        ("clcd_{year}_b.tif", "clcd", lambda: make_tile_b(
            rng, polygons["liangzi-lakeside-wetland"])),
        ("worldcover_{year}.tif", "worldcover", lambda: make_worldcover(
            rng, polygons["daye-mine-wc"])),
    ]
    catalog_rows: list[tuple[int, str, str]] = []
    for pattern, legend, make in tiles:
        grid, years = make()
        for year, data in years.items():
            name = pattern.format(year=year)
            write_raster(LANDCOVER_DIR / name, data, grid, legend, year)
            catalog_rows.append((year, name, legend))
    write_catalog(LANDCOVER_DIR / "catalog.csv", catalog_rows)
    write_accuracy_sample(LANDCOVER_DIR / ACCURACY_FILE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--summary", action="store_true",
                        help="print per-site, per-year class counts of the written files")
    args = parser.parse_args()
    if args.summary:
        print(summary_markdown(LANDCOVER_DIR / "catalog.csv", OUT_DIR / "sites.geojson"))
    else:
        build()
        print(f"wrote {OUT_DIR}")


if __name__ == "__main__":
    main()
