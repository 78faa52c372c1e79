"""Inputs on object storage: the sites file, the catalog and its rasters at ``s3://`` URLs, read
from a local S3-compatible server (moto's, which .ci/run starts and names in
CARBON_SINK_TEST_S3_ENDPOINT). The demo's files are uploaded to a bucket of their own per test;
the sinks metered from the bucket equal those metered from the local files, through the Python
pipeline and on a 2-worker Dask LocalCluster; an unchanged site is skipped and its rasters are not
downloaded again (the hash cache, keyed on the object's ETag), counted on the server's request
recording.

Without CARBON_SINK_TEST_S3_ENDPOINT the tests are skipped, unless CI=true (then they fail).
"""

from __future__ import annotations

import json
import os
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from carbon.errors import InputError
from carbon.io.ledger import Ledger
from carbon.io.tables import sha256_file
from carbon.rules.vocabulary import SINK_COLUMNS
from tests.conftest import DEMO, REPO, write_config

ENDPOINT_VAR = "CARBON_SINK_TEST_S3_ENDPOINT"
COEFFICIENTS = REPO / "data" / "coefficients" / "ipcc2019_tier1.csv"
SITES = {"wuhan-quarry-reclaim", "daye-mine-wc", "liangzi-lakeside-wetland", "jiufeng-forest-park"}


def s3_endpoint() -> str:
    url = os.environ.get(ENDPOINT_VAR)
    if not url:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {ENDPOINT_VAR} is not set (.ci/run starts moto's S3 server)")
        pytest.skip(f"no S3-compatible server: set {ENDPOINT_VAR} (e.g. moto_server -p 5000 and "
                    f"{ENDPOINT_VAR}=http://127.0.0.1:5000)")
    return url


@dataclass
class Bucket:
    endpoint: str
    name: str
    fs: object

    def url(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def put_demo(self) -> None:
        """The demo's sites file and land-cover catalog with its rasters, under ``demo/``."""
        self.fs.put(str(DEMO / "sites.geojson"), f"{self.name}/demo/sites.geojson")  # type: ignore[attr-defined]
        self.fs.put(str(DEMO / "landcover") + "/", f"{self.name}/demo/landcover/", recursive=True)  # type: ignore[attr-defined]

    # --- the server's record of requests (moto's recorder) ------------------------------

    def _moto(self, action: str, method: str = "POST") -> str:
        req = urllib.request.Request(f"{self.endpoint}/moto-api/recorder/{action}", method=method)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.read().decode()

    def record(self) -> None:
        self._moto("reset-recording")
        self._moto("start-recording")

    def requests(self) -> list[dict]:
        """The requests made to this bucket since ``record``: method, key, user agent."""
        text = self._moto("download-recording", "GET")
        self._moto("stop-recording")
        out = []
        for line in text.splitlines():
            entry = json.loads(line)
            path = entry["url"].split("://", 1)[-1].split("/", 1)[-1].split("?", 1)[0]
            if path.startswith(f"{self.name}/"):
                out.append({"method": entry["method"], "key": path[len(self.name) + 1:],
                            "agent": entry["headers"].get("User-Agent", ""),
                            "range": entry["headers"].get("Range", "")})
        return out


def raster_downloads(requests: list[dict]) -> Counter:
    """GETs of raster objects made through fsspec/botocore (the input hash streams an object
    with them; GDAL's own ranged reads of headers and windows say ``GDAL`` in their agent)."""
    return Counter(r["key"] for r in requests
                   if r["method"] == "GET" and r["key"].endswith(".tif") and "GDAL" not in r["agent"])


@pytest.fixture
def bucket(monkeypatch, tmp_path: Path) -> Iterator[Bucket]:
    """A fresh bucket on the test server, with the environment a user sets for it: credentials and
    ``AWS_ENDPOINT_URL`` (botocore, s3fs; GDAL's settings are derived from it) and no other AWS
    configuration of this machine."""
    import s3fs

    endpoint = s3_endpoint().rstrip("/")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING",
                "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    fs = s3fs.S3FileSystem(endpoint_url=endpoint, key="testing", secret="testing", skip_instance_cache=True)
    name = f"carbon-sink-test-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    yield Bucket(endpoint, name, fs)
    fs.rm(name, recursive=True)


def s3_config(path: Path, bucket: Bucket, output_dir: Path, *, coefficients: bool = False) -> Path:
    """A configuration whose sites file and catalog (and, if asked, the coefficient set) are in
    the bucket."""
    path.parent.mkdir(parents=True, exist_ok=True)
    coef = bucket.url("coefficients/ipcc2019_tier1.csv") if coefficients else None
    return write_config(path, sites=bucket.url("demo/sites.geojson"),  # type: ignore[arg-type]
                        landcover=bucket.url("demo/landcover/catalog.csv"),  # type: ignore[arg-type]
                        coefficients=coef, output_dir=output_dir)  # type: ignore[arg-type]


def local_config(path: Path, output_dir: Path) -> Path:
    """The demo's configuration, read from the local files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_config(path, output_dir=output_dir)


def meter(cfg: Path) -> dict:
    """One metering run through the Python pipeline (no Prefect): start, each site, finish."""
    from carbon.pipeline.loop import SiteParams, finish_run, for_each_site, meter_site, start_run

    ctx = start_run(str(cfg))
    outcomes = for_each_site(ctx.site_ids, lambda site_id: meter_site(ctx, site_id, SiteParams()))
    return finish_run(ctx, outcomes)


def sinks(output_dir: Path) -> pd.DataFrame:
    """The published sinks (every column of the sink table, as the ledger holds them)."""
    table = Ledger(f"sqlite:///{output_dir / 'ledger.db'}").current("sinks")
    table = table[[c for c in SINK_COLUMNS if c in table.columns]]
    return table.sort_values(["site_id", "period_start", "period_end"]).reset_index(drop=True)


def raster_hashes(manifest: Path) -> dict[str, dict[str, str]]:
    """Each site's raster hashes by year, keyed on the raster's file name (local or URL alike)."""
    sites = json.loads(manifest.read_text())["sites"]
    return {s: {y: sorted(h for h in v["rasters"].values()) for y, v in rec["inputs"]["years"].items()}
            for s, rec in sites.items()}


# --- the helpers -------------------------------------------------------------------------------


def test_urls_resolve_against_the_catalog_url_and_stay_strings() -> None:
    from carbon.io import storage

    assert storage.is_url("s3://b/k.tif") and not storage.is_url(Path("s3:/b/k.tif")) and not storage.is_url("/a/b")
    assert storage.resolve("s3://b/cat/", "x/../y.tif") == "s3://b/cat/y.tif"
    assert storage.resolve(storage.parent("s3://b/a/catalog.csv"), "../lc/2020.tif") == "s3://b/lc/2020.tif"
    assert storage.resolve("s3://b/a/", "gs://other/z.tif") == "gs://other/z.tif"
    assert storage.resolve("s3://b/a/", "/data/z.tif") == Path("/data/z.tif").resolve()  # a local raster
    assert storage.resolve(REPO, "data") == REPO / "data"
    assert storage.stem("s3://b/a/ipcc.csv") == "ipcc" and storage.name("s3://b/a/ipcc.csv") == "ipcc.csv"


def test_the_endpoint_variable_reaches_gdal_unless_gdal_has_its_own(monkeypatch) -> None:
    from carbon.io import storage

    for var in ("AWS_S3_ENDPOINT", "AWS_HTTPS", "AWS_VIRTUAL_HOSTING", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    assert storage.gdal_options() == {"AWS_S3_ENDPOINT": "127.0.0.1:9000", "AWS_HTTPS": "NO",
                                      "AWS_VIRTUAL_HOSTING": "FALSE"}
    monkeypatch.setenv("AWS_S3_ENDPOINT", "minio.example:443")
    assert storage.gdal_options() == {}


def test_a_file_replaced_while_it_is_hashed_is_cached_under_its_new_version(tmp_path: Path, monkeypatch) -> None:
    import hashlib

    from carbon.io import hashing, storage

    path = tmp_path / "lc.tif"
    path.write_bytes(b"old")
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    real, calls = storage.sha256, []

    def replaced_during_the_first_read(loc):  # the file is rewritten while the first hash reads it
        calls.append(loc)
        digest = real(loc)
        if len(calls) == 1:
            path.write_bytes(b"newer")
            os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
        return digest

    monkeypatch.setattr(storage, "sha256", replaced_during_the_first_read)
    assert hashing.cached_sha256(ledger, str(path)) == hashlib.sha256(b"newer").hexdigest()
    assert len(calls) == 2
    size, version = storage.signature(path)
    assert ledger.cached_hash(str(path), size, version) == hashlib.sha256(b"newer").hexdigest()


def test_an_object_hashes_as_its_file_streamed_in_blocks(bucket: Bucket, monkeypatch) -> None:
    from carbon.io import storage

    local = DEMO / "landcover" / "clcd_2018_a.tif"
    bucket.fs.put(str(local), f"{bucket.name}/one.tif")  # type: ignore[attr-defined]
    monkeypatch.setattr(storage, "HASH_BLOCK", 1000)  # several ranged reads
    assert sha256_file(bucket.url("one.tif")) == sha256_file(local)
    size, version = storage.signature(bucket.url("one.tif"))
    assert size == local.stat().st_size and 0 <= version < 2**63
    bucket.fs.pipe(f"{bucket.name}/one.tif", b"changed")  # type: ignore[attr-defined]
    assert storage.signature(bucket.url("one.tif"))[1] != version  # a new ETag: a new cache key


def test_real_rasters_in_a_bucket_give_the_numbers_of_the_local_files(bucket: Bucket, shared: Path,
                                                                       tmp_path: Path, monkeypatch) -> None:
    """Swiss Arealstatistik (2.4 MB striped GeoTIFFs, $CARBON_SINK_DATASETS; uploaded, never copied
    into the repository): a catalog at a URL naming them relative to itself, read by GDAL in ranged
    requests, and hashed in several streamed blocks."""
    import rasterio
    import shapely
    from pyproj import CRS

    from carbon.io import storage
    from carbon.io.tables import load_catalog, load_coefficients
    from carbon.pipeline.site import compute_site
    from carbon.rules.site import Site
    from tests.conftest import write_catalog, write_coefficients, write_legend
    from tests.integration.test_real_data import DENSITY, SWISS_LEGEND

    d = shared / "swiss_arealstatistik_as17"
    years = {1985: "AS85R_17.tif", 2018: "AS18_17.tif"}
    for f in years.values():
        bucket.fs.put(str(d / f), f"{bucket.name}/swiss/maps/{f}")  # type: ignore[attr-defined]
    rows = "".join(f"{y},maps/{f},arealstatistik17\n" for y, f in years.items())
    bucket.fs.pipe(f"{bucket.name}/swiss/catalog.csv", f"year,path,legend\n{rows}".encode())  # type: ignore[attr-defined]
    local = load_catalog(write_catalog(tmp_path / "catalog.csv", [(y, d / f, "arealstatistik17") for y, f in years.items()]))
    remote = load_catalog(bucket.url("swiss/catalog.csv"))
    assert [e.path for e in remote] == [bucket.url(f"swiss/maps/{f}") for f in years.values()]
    legends = write_legend(tmp_path / "legends" / "arealstatistik17.csv", SWISS_LEGEND).parent
    coef = load_coefficients(write_coefficients(tmp_path / "coef.csv", DENSITY))
    with rasterio.open(d / years[2018]) as src:  # a block in the middle of the maps
        left, bottom, right, top = src.bounds
        crs = CRS.from_wkt(src.crs.to_wkt())
    w, h = right - left, top - bottom
    box = shapely.box(left + 0.4 * w, bottom + 0.4 * h, left + 0.6 * w, bottom + 0.6 * h)
    site = Site("swiss-block", "swiss-block", "other", "*", box, crs)
    here = compute_site(site, local, coef, legends_dir=legends, draws=200).tables()
    there = compute_site(site, remote, coef, legends_dir=legends, draws=200).tables()
    for name in ("stocks", "sinks", "transitions", "area_by_code"):
        pd.testing.assert_frame_equal(there[name], here[name], check_exact=True)
    monkeypatch.setattr(storage, "HASH_BLOCK", 1 << 20)  # three ranged reads of 1 MB
    assert storage.sha256(remote[0].path) == storage.sha256(local[0].path)


# --- metering from the bucket ------------------------------------------------------------------


def test_metering_from_s3_equals_local_skips_unchanged_sites_and_downloads_each_raster_once(
        bucket: Bucket, tmp_path: Path) -> None:
    bucket.put_demo()
    bucket.fs.put(str(COEFFICIENTS), f"{bucket.name}/coefficients/ipcc2019_tier1.csv")  # type: ignore[attr-defined]
    local_out, s3_out = tmp_path / "local" / "out", tmp_path / "s3" / "out"
    local = meter(local_config(tmp_path / "local" / "c.toml", local_out))
    bucket.record()
    first = meter(s3_config(tmp_path / "s3" / "c.toml", bucket, s3_out, coefficients=True))
    assert first["status"] == "completed" and first["n_sites"] == 4 and first["n_skipped"] == 0, first["failures"]
    pd.testing.assert_frame_equal(sinks(s3_out), sinks(local_out), check_exact=True)
    assert set(sinks(s3_out)["site_id"]) == SITES
    # the same bytes: the same input hashes, the rasters named by their URLs
    manifest = json.loads(Path(first["manifest"]).read_text())
    assert all(p.startswith(f"s3://{bucket.name}/demo/landcover/")
               for rec in manifest["sites"].values() for y in rec["inputs"]["years"].values() for p in y["rasters"])
    assert raster_hashes(Path(first["manifest"])) == raster_hashes(Path(local["manifest"]))
    assert {r["inputs"]["coefficient_sha256"] for r in manifest["sites"].values()} == {sha256_file(COEFFICIENTS)}
    # each raster covering a site was downloaded for its hash once, whatever the sites sharing it
    downloads = raster_downloads(bucket.requests())
    used = {p.rsplit("/", 1)[-1] for rec in manifest["sites"].values() for y in rec["inputs"]["years"].values()
            for p in y["rasters"]}
    assert {k.rsplit("/", 1)[-1] for k in downloads} == used
    assert set(downloads.values()) == {1}, downloads

    bucket.record()
    second = meter(s3_config(tmp_path / "s3" / "c.toml", bucket, s3_out, coefficients=True))
    assert second["n_skipped"] == 4 and second["n_failed"] == 0
    assert raster_downloads(bucket.requests()) == Counter()  # the hash cache (url, size, ETag): no download

    # a raster replaced in the bucket (new ETag) is hashed again and its sites recomputed
    key = "demo/landcover/worldcover_2024.tif"
    bucket.fs.put(str(DEMO / "landcover" / "worldcover_2023.tif"), f"{bucket.name}/{key}")  # type: ignore[attr-defined]
    bucket.record()
    third = meter(s3_config(tmp_path / "s3" / "c.toml", bucket, s3_out, coefficients=True))
    assert third["n_failed"] == 0 and third["n_skipped"] < 4
    assert raster_downloads(bucket.requests()) == Counter({key: 1})


@pytest.mark.prefect
def test_metering_from_s3_on_a_dask_local_cluster(bucket: Bucket, tmp_path: Path, monkeypatch,
                                                  prefect_server) -> None:
    """Two worker processes read the bucket with GDAL's own variables set (as a user of GDAL
    would), and publish the sinks of the local files; a second run skips every site and
    downloads no raster."""
    from flows.metering import metering_run, with_dask

    host = bucket.endpoint.split("://", 1)[1]
    monkeypatch.setenv("AWS_S3_ENDPOINT", host)
    monkeypatch.setenv("AWS_HTTPS", "NO")
    monkeypatch.setenv("AWS_VIRTUAL_HOSTING", "FALSE")
    bucket.put_demo()
    local_out, s3_out = tmp_path / "local" / "out", tmp_path / "s3" / "out"
    local_cfg = local_config(tmp_path / "local" / "c.toml", local_out)
    assert metering_run(config=str(local_cfg), reports=False, return_state=True).is_completed()
    cfg = s3_config(tmp_path / "s3" / "c.toml", bucket, s3_out)
    state = with_dask(None, 2)(config=str(cfg), return_state=True)  # reports read the rasters from S3 too
    assert state.is_completed(), state.message
    summary = state.result()
    assert summary["n_failed"] == 0 and summary["n_skipped"] == 0
    pd.testing.assert_frame_equal(sinks(s3_out), sinks(local_out), check_exact=True)
    pages = summary["reports"]
    assert set(pages) == SITES
    assert all((Path(p).parent / "land_cover.png").is_file() for p in pages.values()), pages

    bucket.record()
    state = with_dask(None, 2)(config=str(cfg), reports=False, return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["n_skipped"] == 4
    assert raster_downloads(bucket.requests()) == Counter()


# --- bad input ---------------------------------------------------------------------------------


def test_a_missing_object_is_one_line_naming_its_url(bucket: Bucket, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from carbon.io.sites import load_sites
    from carbon.io.tables import load_catalog
    from flows.cli import app

    missing = bucket.url("nowhere/sites.geojson")
    with pytest.raises(InputError) as err:
        load_sites(missing)
    assert str(err.value) == f"sites file not found (file {missing})"
    with pytest.raises(InputError) as err:
        load_sites(f"s3://{bucket.name}-absent/sites.geojson")  # no such bucket
    assert "\n" not in str(err.value) and f"{bucket.name}-absent/sites.geojson" in str(err.value)

    # a catalog naming a raster that is not in the bucket: the row and the raster's URL
    bucket.fs.pipe(f"{bucket.name}/cat/catalog.csv", b"year,path,legend\n2020,lc2020.tif,clcd\n")  # type: ignore[attr-defined]
    with pytest.raises(InputError) as err:
        load_catalog(bucket.url("cat/catalog.csv"))
    assert err.value.problems == [f"{bucket.url('cat/catalog.csv')}, row 2: raster file not found: "
                                  f"{bucket.url('cat/lc2020.tif')}"]

    # the command line: one line on stderr, exit 3 (bad input)
    bucket.put_demo()
    cfg = write_config(tmp_path / "c.toml", sites=missing, landcover=bucket.url("demo/landcover/catalog.csv"),  # type: ignore[arg-type]
                       output_dir=tmp_path / "out")
    result = CliRunner().invoke(app, ["run", "--config", str(cfg), "--no-reports"])
    assert result.exit_code == 3, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: sites file not found (file {missing})"], result.output
