"""Compiled per-pixel kernels (numba): one pass over a strip of every year's codes.

The arithmetic is the engine's (docs/methods.md §3-§5): each pixel's weight is its
ellipsoidal area times the share of it inside the site; each year's code is looked up in
its crosswalk; the weight is summed by code, by year, and by (class at the start, class at
the end) of every period. numpy would make some ten full-size passes and temporaries for
this; the kernel makes one, with no temporaries, and releases the GIL so that strips of a
large site can run on several threads.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

#: Class index of a pixel without data (or with a code its crosswalk does not know).
INVALID = -1


#: Partial sums kept per pixel column modulo LANES: runs of the same code then add to
#: different memory cells instead of waiting on one another.
LANES = 4


@numba.njit(nogil=True, cache=True, boundscheck=False)
def accumulate_strip(codes, valid, tables, offsets, n_codes, class_of_code,  # noqa: PLR0913, PLR0912, ANN001, ANN201
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
    k = trans.shape[1]
    width = code_area.shape[1]
    # bins per year: 0 no data, 1..width crosswalk rows, width + 1 unknown code, width + 2 outside
    unknown_bin = width + 1
    outside_bin = width + 2
    n_bins = width + 3
    bins = np.empty((n_years, ncols), dtype=np.int64)
    wrow = np.empty(ncols)
    area_l = np.zeros((n_years, n_bins * LANES))
    count_l = np.zeros((n_years, n_bins * LANES), dtype=np.int64)
    kk = k + 1  # class k: no class (no data, unknown or outside)
    trans_l = np.zeros((max(n_periods, 1), kk * kk * LANES))
    class_of_bin = np.full((n_years, n_bins), k, dtype=np.int64)
    for y in range(n_years):
        for q in range(n_codes[y]):
            class_of_bin[y, q + 1] = class_of_code[y, q]
    site_l = np.zeros(LANES)
    for r in range(nrows):
        jr = j[r]
        s1 = row_m2[r] * 1e-4 * t[r]  # m^2 -> ha
        s0 = row_m2[r] * 1e-4 - s1
        for c in range(ncols):
            w = ratio[jr, c] * s0 + ratio[jr + 1, c] * s1
            if use_cov:
                w *= cov[r, c]
            wrow[c] = w
        for y in range(n_years):
            tab = tables[y]
            off = offsets[y]
            nc = n_codes[y]
            for c in range(ncols):
                if use_cov and cov[r, c] <= 0.0:
                    bins[y, c] = outside_bin
                elif valid[y, r, c]:
                    row = tab[np.int64(codes[y, r, c]) + off]
                    bins[y, c] = row + 1 if row < nc else unknown_bin
                else:
                    bins[y, c] = 0
            for c in range(ncols):
                b = bins[y, c] * LANES + (c & (LANES - 1))
                area_l[y, b] += wrow[c]
                count_l[y, b] += 1
        for p in range(n_periods):
            ya = periods[p, 0]
            yb = periods[p, 1]
            for c in range(ncols):
                a = class_of_bin[ya, bins[ya, c]]
                b = class_of_bin[yb, bins[yb, c]]
                trans_l[p, (a * kk + b) * LANES + (c & (LANES - 1))] += wrow[c]
        for c in range(ncols):
            site_l[c & (LANES - 1)] += wrow[c]
        if write:
            base = r * ncols
            for c in range(ncols):
                weight[base + c] = wrow[c]
            for y in range(n_years):
                for c in range(ncols):
                    cls = class_of_bin[y, bins[y, c]]
                    classes[y, base + c] = INVALID if cls == k else cls
    for y in range(n_years):
        for q in range(width):
            for lane in range(LANES):
                code_area[y, q] += area_l[y, (q + 1) * LANES + lane]
                pixels[y, q] += count_l[y, (q + 1) * LANES + lane]
        for lane in range(LANES):
            nodata_ha[y] += area_l[y, lane] + area_l[y, unknown_bin * LANES + lane]
            unknown[y] += count_l[y, unknown_bin * LANES + lane]
    for p in range(n_periods):
        for a in range(k):
            for b in range(k):
                for lane in range(LANES):
                    trans[p, a, b] += trans_l[p, (a * kk + b) * LANES + lane]
    site_ha = 0.0
    for lane in range(LANES):
        site_ha += site_l[lane]
    return site_ha


# --- gain-loss: soil carbon weights per pixel ------------------------------------------


@numba.njit(nogil=True, cache=True, boundscheck=False)
def soc_step(cls, year, soc_years, anchor, target, run_start, last_seen, lam):  # noqa: PLR0913, ANN001, ANN201
    """One map year of ``dynamics.soc_weights``, element by element with the same operations
    in the same order (so the same numbers): advances the per-pixel state (``anchor`` (pixel,
    class), ``target``, ``run_start``, ``last_seen``) with the year's classes ``cls``
    (``INVALID``: no data) and writes the year's SOC weights into ``lam`` (pixel, class)."""
    n, k = anchor.shape
    for p in range(n):
        c = cls[p]
        if c != INVALID:
            t = target[p]
            if t == INVALID:  # first observation: at equilibrium in its class
                for q in range(k):
                    anchor[p, q] = 0.0
                anchor[p, c] = 1.0
                run_start[p] = year - soc_years
                target[p] = c
            elif c != t:  # a change: the weights at the change become the new anchor
                when = (last_seen[p] + 1 + year) / 2
                f = (when - run_start[p]) / soc_years
                f = f if f > 0.0 else 0.0  # np.clip(f, 0, 1)
                f = f if f < 1.0 else 1.0
                g = 1 - f
                for q in range(k):
                    anchor[p, q] = anchor[p, q] * g + (f if q == t else 0.0)
                run_start[p] = when
                target[p] = c
            last_seen[p] = year
        f = (year - run_start[p]) / soc_years
        f = f if f > 0.0 else 0.0
        f = f if f < 1.0 else 1.0
        g = 1 - f
        for q in range(k):
            lam[p, q] = anchor[p, q] * g
        t = target[p]
        if t != INVALID:
            lam[p, t] += f


@numba.njit(nogil=True, cache=True, boundscheck=False)
def group_by_class(sel, cls, w, lam, k, w_out, lam_out):  # noqa: PLR0913, ANN001, ANN201
    """The selected pixels (``sel``) grouped by class, each group in pixel order, written to
    ``w_out`` and ``lam_out`` (at least as many rows as pixels selected); returns ``offsets``:
    class c's pixels are at rows ``offsets[c]:offsets[c + 1]`` (what ``w[sel][cls[sel] == c]``
    and ``lam[sel][cls[sel] == c]`` give)."""
    n = cls.shape[0]
    m = lam.shape[1]
    counts = np.zeros(k, dtype=np.int64)
    for p in range(n):
        if sel[p]:
            counts[cls[p]] += 1
    offsets = np.zeros(k + 1, dtype=np.int64)
    for c in range(k):
        offsets[c + 1] = offsets[c] + counts[c]
    cursor = offsets[:k].copy()
    for p in range(n):
        if sel[p]:
            c = cls[p]
            i = cursor[c]
            cursor[c] = i + 1
            w_out[i] = w[p]
            for q in range(m):
                lam_out[i, q] = lam[p, q]
    return offsets


@numba.njit(nogil=True, cache=True, boundscheck=False)
def age_hist_add(sel, cls, age, w, span, n_age, age_max, out):  # noqa: PLR0913, PLR0912, ANN001, ANN201
    """``out += dynamics.Aggregates._hist(cls[sel], age[sel], w[sel], span[sel])`` (``out``
    flat, class x age bin), with the same additions in the same order: ``np.bincount`` sums
    into zeros in pixel order; a change spread over ``d`` years adds ``w / d`` at each of its
    ages, one spread length (ascending) and one offset at a time."""
    n = cls.shape[0]
    size = out.shape[0]
    mature = n_age - 1
    longest = 1
    for p in range(n):
        if sel[p] and span[p] > longest:
            longest = span[p]
    tmp = np.zeros(size)
    if longest <= 1:
        for p in range(n):
            if sel[p]:
                a = age[p]
                b = mature if a < 0 else (a if a < age_max else age_max)
                tmp[cls[p] * n_age + b] += w[p]
        for j in range(size):
            out[j] += tmp[j]
        return
    present = np.zeros(longest + 1, dtype=np.bool_)
    for p in range(n):
        if sel[p]:
            present[span[p]] = True
    res = np.zeros(size)
    for d in range(longest + 1):
        if not present[d]:
            continue
        for offset in range(d):
            tmp[:] = 0.0
            for p in range(n):
                if sel[p] and span[p] == d:
                    a = age[p] + offset
                    b = mature if a < 0 else (a if a < age_max else age_max)
                    tmp[cls[p] * n_age + b] += w[p] / d
            for j in range(size):
                res[j] += tmp[j]
    for j in range(size):
        out[j] += res[j]


@numba.njit(nogil=True, cache=True, boundscheck=False)
def pair_hist_add(sel, a, b, k, w, out):  # noqa: ANN001, ANN201
    """``out += np.bincount(a[sel] * k + b[sel], weights=w[sel], minlength=out.size)``, the same
    additions in the same order (``out`` flat)."""
    size = out.shape[0]
    tmp = np.zeros(size)
    for p in range(a.shape[0]):
        if sel[p]:
            tmp[a[p] * k + b[p]] += w[p]
    for j in range(size):
        out[j] += tmp[j]


@numba.njit(nogil=True, cache=True, boundscheck=False)
def history(classes, years, init_age, has_init, flicker, max_flicker_span):  # noqa: PLR0913, PLR0912, PLR0915, ANN001, ANN201
    """``dynamics.filter_flicker`` (when ``flicker``), then ``run_history`` and the ages of
    ``Aggregates.add``, pixel by pixel (integers only: the same values). Returns the filtered
    classes, the filtered mask, the run starts, the spans (1 where the run is not a dated
    change) and the ages (``init_age + years since the first map`` or -1 (mature) for runs that
    began at the first observation, -2 without data)."""
    n_years, n = classes.shape
    out = classes.copy()
    changed = np.zeros(classes.shape, dtype=np.bool_)
    start = np.empty((n_years, n), dtype=np.int64)
    span = np.empty((n_years, n), dtype=np.int64)
    ages = np.empty((n_years, n), dtype=np.int64)
    following = np.empty(n_years, dtype=np.int64)
    following_year = np.empty(n_years, dtype=np.int64)
    for p in range(n):
        if flicker:
            ahead = INVALID
            ahead_year = 0
            for i in range(n_years - 1, -1, -1):
                following[i] = ahead
                following_year[i] = ahead_year
                if classes[i, p] != INVALID:
                    ahead = classes[i, p]
                    ahead_year = years[i]
            before = INVALID
            before_year = 0
            for i in range(n_years):
                here = classes[i, p]
                after = following[i]
                if (before != INVALID and after != INVALID and here != INVALID and before == after
                        and here != before and following_year[i] - before_year <= max_flicker_span):
                    out[i, p] = before
                    changed[i, p] = True
                if out[i, p] != INVALID:
                    before = out[i, p]
                    before_year = years[i]
        cur = INVALID
        cur_start = -1
        cur_span = 1
        last_seen = -1
        for i in range(n_years):
            c = out[i, p]
            if c == INVALID:
                start[i, p] = -2
                span[i, p] = 1  # np.where(start >= 0, span, 1)
                ages[i, p] = -2
                continue
            if cur != c:
                if cur != INVALID:
                    cur_start = years[i]
                    cur_span = years[i] - last_seen
                cur = c
            last_seen = years[i]
            start[i, p] = cur_start
            span[i, p] = cur_span if cur_start >= 0 else 1
            if cur_start == -1:
                ages[i, p] = init_age + (years[i] - years[0]) if has_init else -1
            else:
                ages[i, p] = years[i] - cur_start
    return out, changed, start, span, ages


def warm(codes_dtype: str = "uint8") -> None:
    """Load the strip kernel for codes of ``codes_dtype`` (and the gain-loss steps) from numba's
    on-disk cache by calling each once on a few cells. The first compiled call of a process
    pays numba's own start (its type registries, about 0.3-0.5 s of Python) whatever the
    kernel; a later one with other argument types only loads its own code."""
    n_years, ncols = 2, 4
    codes = np.zeros((n_years, 1, ncols), dtype=codes_dtype)
    valid = np.ones((n_years, 1, ncols), dtype=np.bool_)
    tables = np.zeros((n_years, 2), dtype=np.int64)
    ones = np.ones(n_years, dtype=np.int64)
    accumulate_strip(codes, valid, tables, np.zeros(n_years, dtype=np.int64), ones,
                     np.zeros((n_years, 1), dtype=np.int64), np.ones(1), np.ones((2, ncols)),
                     np.zeros(1, dtype=np.int64), np.zeros(1), np.ones((1, 1)), False,
                     np.zeros((1, 2), dtype=np.int64), np.zeros((n_years, 1)), np.zeros((n_years, 1), dtype=np.int64),
                     np.zeros(n_years), np.zeros(n_years, dtype=np.int64), np.zeros((1, 1, 1)),
                     np.empty((n_years, 0), dtype=np.int32), np.empty(0), False)


_warming: threading.Thread | None = None
_warming_lock = threading.Lock()


def warm_in_background(codes_dtype: str = "uint8") -> None:
    """Start :func:`warm` on a thread once per process, so that numba's start overlaps the
    work before the first strip (planning, pixel-area nodes, the first reads: mostly outside
    the GIL); a kernel called meanwhile waits for numba's compiler lock, then runs."""
    global _warming  # noqa: PLW0603
    with _warming_lock:
        if _warming is not None or accumulate_strip.signatures:
            return
        # not a daemon: an interpreter that exits meanwhile waits for it rather than stop numba mid-load
        _warming = threading.Thread(target=_warm_quietly, args=(codes_dtype,), name="carbon-kernel-warm")
        _warming.start()


def _warm_quietly(codes_dtype: str) -> None:
    try:
        warm(codes_dtype)
    except Exception:  # noqa: BLE001, S110 - the first real call compiles or fails on its own
        pass
