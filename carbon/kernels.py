"""Compiled per-pixel kernels (numba): one pass over a strip of every year's codes.

The arithmetic is the engine's (docs/methods.md §3-§5): each pixel's weight is its
ellipsoidal area times the share of it inside the site; each year's code is looked up in
its crosswalk; the weight is summed by code, by year, and by (class at the start, class at
the end) of every period. numpy would make some ten full-size passes and temporaries for
this; the kernel makes one, with no temporaries, and releases the GIL so that strips of a
large site can run on several threads.
"""

from __future__ import annotations

import numba
import numpy as np

#: Class index of a pixel without data (or with a code its crosswalk does not know).
INVALID = -1


@numba.njit(nogil=True, cache=True)
def accumulate_strip(codes, valid, tables, offsets, n_codes, class_of_code,  # noqa: PLR0913, ANN001, ANN201
                     row_m2, ratio, j, t, cov, use_cov, periods,
                     code_area, pixels, nodata_ha, unknown, trans, classes, weight, write):
    """Accumulate one strip; returns the site area (ha) the strip adds.

    codes, valid: (year, rows, columns) raw codes and validity; ``tables[y, code +
    offsets[y]]`` is the crosswalk row of a code (``n_codes[y]`` or more: not in the
    crosswalk) and ``class_of_code[y, row]`` its carbon class. Pixel area (m^2) is
    ``row_m2[r] * (ratio[j[r], c] * (1 - t[r]) + ratio[j[r] + 1, c] * t[r])``
    (carbon.area.StripAreas), times ``cov[r, c]`` when ``use_cov``; pixels with no
    coverage are outside the site. Adds to: code_area (year, row) ha, pixels (year, row),
    nodata_ha (year,), unknown (year,) count of valid pixels with unknown codes, and
    trans (period, class from, class to) ha for ``periods`` (period, 2) year indices.
    With ``write``, also stores each pixel's class per year (``INVALID`` outside the site
    or without data) in classes (year, rows * columns) and its weight (ha, 0 outside) in
    weight (rows * columns).
    """
    n_years, nrows, ncols = codes.shape
    n_periods = periods.shape[0]
    cls = np.empty(n_years, dtype=np.int64)
    site_ha = 0.0
    for r in range(nrows):
        jr = j[r]
        tr = t[r]
        scale = row_m2[r] * 1e-4  # m^2 -> ha
        for c in range(ncols):
            pix = r * ncols + c
            if use_cov and cov[r, c] <= 0.0:
                if write:
                    weight[pix] = 0.0
                    for y in range(n_years):
                        classes[y, pix] = INVALID
                continue
            w = scale * (ratio[jr, c] * (1.0 - tr) + ratio[jr + 1, c] * tr)
            if use_cov:
                w *= cov[r, c]
            site_ha += w
            for y in range(n_years):
                if not valid[y, r, c]:
                    cls[y] = INVALID
                    nodata_ha[y] += w
                    continue
                row = tables[y, np.int64(codes[y, r, c]) + offsets[y]]
                if row >= n_codes[y]:
                    unknown[y] += 1
                    cls[y] = INVALID
                    nodata_ha[y] += w
                    continue
                code_area[y, row] += w
                pixels[y, row] += 1
                cls[y] = class_of_code[y, row]
            for p in range(n_periods):
                a = cls[periods[p, 0]]
                b = cls[periods[p, 1]]
                if a >= 0 and b >= 0:
                    trans[p, a, b] += w
            if write:
                weight[pix] = w
                for y in range(n_years):
                    classes[y, pix] = cls[y]
    return site_ha
