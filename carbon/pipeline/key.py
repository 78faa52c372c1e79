"""The input key of a site: a content digest of everything its result depends on (geometry
and properties, the bytes of every raster covering it and of its maps' accuracy samples, the crosswalks, the coefficient set,
the parameters, the code), so that a run skips a site whose key is unchanged."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from carbon.io.outputs import code_version
from carbon.io.tables import sha256_file
from carbon.pipeline.plan import YearPlan, plan_site
from carbon.rules.coefficients import CatalogEntry, CoefficientSet
from carbon.rules.policies import site_dynamics
from carbon.rules.site import Site, SiteLimits


def site_input_key(site: Site, catalog: list[CatalogEntry], coefficients: CoefficientSet,
                   legends_dir: Path | None, *, years: list[int] | None, start_year: int | None,
                   method: str | None = None, uncertainty: dict[str, Any] | None = None, hash_file: Callable[[str], str] = sha256_file, code: str | None = None,
                   limits: SiteLimits | None = None) -> tuple[str, dict[str, Any]]:
    """Content key of everything a site's result depends on: geometry and properties, the
    bytes of every raster covering it, the crosswalks, the coefficient set, the code."""
    key, inputs, _ = keyed_plan(site, catalog, coefficients, legends_dir, years=years, start_year=start_year,
                                method=method, uncertainty=uncertainty, hash_file=hash_file, code=code, limits=limits)
    return key, inputs


def keyed_plan(site: Site, catalog: list[CatalogEntry], coefficients: CoefficientSet,
               legends_dir: Path | None, *, years: list[int] | None, start_year: int | None,
               method: str | None = None, uncertainty: dict[str, Any] | None = None,
               hash_file: Callable[[str], str] = sha256_file, code: str | None = None,
               limits: SiteLimits | None = None) -> tuple[str, dict[str, Any], dict[int, YearPlan]]:
    """``site_input_key`` with the site's plan it is made from (``plan_site``), which computing
    the site may then use instead of planning it again."""
    plan = plan_site(site, catalog, coefficients, legends_dir, years, limits=limits)
    dyn = site_dynamics(site, coefficients, method)
    inputs = {
        "site": {
            "site_id": site.site_id,
            "geometry_sha256": site.geometry_sha256,
            "ecozone": site.ecozone,
            "baseline_year": site.baseline_year,
            "method": dyn.method,
            "initial_age": dyn.initial_age,
            "properties": site.recorded_properties(),
        },
        "years": {
            str(y): {
                "legend": m.legend,
                "crosswalk_sha256": m.crosswalk.sha256,
                "rasters": {i.path: hash_file(i.path) for i in m.infos},
                **({"accuracy_sample": {m.accuracy_path: hash_file(m.accuracy_path)}} if m.accuracy_path else {}),
            }
            for y, m in sorted(plan.items())
        },
        "coefficient_set": coefficients.name,
        "coefficient_sha256": coefficients.sha256,
        "parameters": {"years": years, "start_year": start_year, "uncertainty": uncertainty},
        "code_version": code or code_version(),
    }
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    return key, inputs, plan
