"""Area of each class adjusted for map error: the stratified estimator of area from an
accuracy-assessment sample (Olofsson et al. 2013, Remote Sens. Environ. 129: 122-131;
Olofsson et al. 2014, Remote Sens. Environ. 148: 42-57).

Pure numpy/pandas: no file is read here. The sample is a stratified random sample whose strata
are the map classes; each sample unit carries its map class (the stratum) and its reference
class. With ``n_ij`` the count of units of map class ``i`` and reference class ``j``,
``n_i. = sum_j n_ij`` the stratum's sample size, ``A_i`` the mapped area of class ``i``,
``A_tot = sum_i A_i`` and ``W_i = A_i / A_tot``:

* the estimated area proportion of each cell of the error matrix is
  ``p_ij = W_i * n_ij / n_i.`` (the error matrix "in terms of estimated area proportions" of
  Olofsson et al. 2013 and 2014);
* the area proportion of reference class ``j`` is ``p_.j = sum_i p_ij`` and its error-adjusted
  area ``A_j = A_tot * p_.j`` (Olofsson et al. 2013, eq. 9 and 10);
* ``SE(p_.j) = sqrt(sum_i W_i^2 (n_ij/n_i.)(1 - n_ij/n_i.) / (n_i. - 1))`` and
  ``SE(A_j) = A_tot * SE(p_.j)`` (Olofsson et al. 2013, eq. 10-12); the confidence interval is
  ``A_j +- z * SE(A_j)`` with ``z`` the standard normal quantile of the level
  (1.959963984540054 at 95%);
* user's accuracy ``U_i = p_ii / p_i.``, producer's accuracy ``P_j = p_jj / p_.j`` and overall
  accuracy ``O = sum_j p_jj`` (Olofsson et al. 2013, eq. 14-16) with their standard errors
  (Olofsson et al. 2014, eq. 5-7).

The same sample serves a sub-area (a site): pass the site's own mapped areas; the proportions
``n_ij / n_i.`` estimated in each stratum apply to the part of the stratum inside the site.
This assumes the strata are the map classes of the map whose areas are passed. When the strata
of the sample differ from the map classes (another map, another year's map, strata drawn from
a different layer) this estimator does not apply: Stehman (2014, Int. J. Remote Sens. 35:
4923-4939) gives the estimators for that case, which this module does not implement.

A map class with mapped area but no sample unit, or fewer than 2, has no variance estimate:
that is an :class:`~carbon.errors.InputError` naming the class. A class with zero mapped area
contributes nothing, whatever its sample.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TypeAlias

import numpy as np
import pandas as pd

from carbon.errors import InputError
from carbon.rules.vocabulary import Z95  # the standard normal quantile of a two-sided 95% interval

#: A class label: a raster code (int) or a class name (str).
Label: TypeAlias = int | str


#: The columns of the long table :meth:`AccuracySample.from_long` reads.
LONG_COLUMNS: tuple[str, ...] = ("map_code", "reference_code", "count")


def z_for(level: float) -> float:
    """Standard normal quantile of a two-sided interval of the given level (0 < level < 1)."""
    if not 0.0 < level < 1.0:
        raise InputError(f"confidence level must be between 0 and 1, got {level!r}")
    if level == 0.95:
        return Z95
    return NormalDist().inv_cdf(0.5 + level / 2.0)


@dataclass(frozen=True)
class AccuracySample:
    """Counts of a stratified random accuracy-assessment sample.

    ``counts[i, j]`` is the number of sample units mapped as ``classes[i]`` (the stratum) and
    labelled ``classes[j]`` by the reference; rows and columns share the one list of classes,
    so a class seen only in the reference has an all-zero row and a class only mapped an
    all-zero column (Olofsson et al. 2014, Table 8 layout).
    """

    classes: tuple[Label, ...]
    counts: np.ndarray

    def __post_init__(self) -> None:
        classes = tuple(self.classes)
        counts = np.asarray(self.counts)
        k = len(classes)
        problems: list[str] = []
        repeated = sorted(str(c) for c, times in Counter(classes).items() if times > 1)
        if repeated:
            problems.append(f"class labels are repeated: {', '.join(repeated)}")
        if counts.shape != (k, k):
            problems.append(f"counts must be a {k} x {k} matrix (one row and column per class), got shape "
                            f"{counts.shape}")
        elif counts.size:
            if not np.all(np.isfinite(counts.astype(np.float64))):
                problems.append("counts must be finite")
            elif np.any(counts != np.round(counts)):
                problems.append("counts must be whole numbers")
            elif np.any(counts < 0):
                bad = [f"({classes[i]!r}, {classes[j]!r})" for i, j in zip(*np.nonzero(counts < 0), strict=True)]
                problems.append(f"counts must not be negative: map, reference = {', '.join(bad)}")
        if problems:
            raise InputError("unusable accuracy-assessment sample", problems=problems)
        fixed = counts.astype(np.int64, copy=True)
        fixed.setflags(write=False)
        object.__setattr__(self, "classes", classes)
        object.__setattr__(self, "counts", fixed)

    @classmethod
    def from_matrix(cls, classes: Sequence[Label], counts: np.ndarray | Sequence[Sequence[int]]) -> AccuracySample:
        """Sample from a square count matrix, rows = map class, columns = reference class."""
        return cls(tuple(classes), np.asarray(counts))

    @classmethod
    def from_long(cls, table: pd.DataFrame, classes: Sequence[Label] | None = None) -> AccuracySample:
        """Sample from a long table with columns ``map_code``, ``reference_code``, ``count``.

        Repeated (map, reference) pairs are summed. The classes are, in order, ``classes`` if
        given (it must name every code of the table; extra classes get zero counts), else the
        sorted union of the map and reference codes. The table's columns and types are
        validated upstream: the codes are taken as they come.
        """
        missing = [c for c in LONG_COLUMNS if c not in table.columns]
        if missing:
            raise InputError(f"accuracy sample table lacks column(s) {', '.join(missing)}")
        codes: set[Label] = set(table["map_code"].tolist()) | set(table["reference_code"].tolist())
        if classes is None:
            order: tuple[Label, ...] = tuple(sorted(codes))
        else:
            order = tuple(classes)
            unknown = codes - set(order)
            if unknown:
                raise InputError("accuracy sample table has codes missing from the class list",
                                 problems=[f"code {c!r} is in the table but not in the class list"
                                           for c in sorted(unknown, key=str)])
        index = {c: i for i, c in enumerate(order)}
        counts = np.zeros((len(order), len(order)), dtype=np.int64)
        summed = table.groupby(["map_code", "reference_code"], sort=False)["count"].sum()
        for (m, r), n in summed.items():
            counts[index[m], index[r]] += int(n)
        return cls(order, counts)

    @property
    def stratum_sizes(self) -> np.ndarray:
        """``n_i.``, the sample size of each map class (stratum)."""
        return np.asarray(self.counts.sum(axis=1), dtype=np.int64)


@dataclass(frozen=True)
class AreaEstimate:
    """Stratified estimates of area and accuracy (Olofsson et al. 2013; 2014).

    Arrays are aligned with ``classes``; areas are in the unit of the mapped areas passed
    (pixels, m2, ha). ``area``/``se``/``proportion``/``proportion_se``/``producers`` are per
    reference class; ``mapped_area``/``users`` per map class. Accuracies that are undefined
    (a map class with no mapped area has no user's accuracy; a class with no estimated area no
    producer's accuracy) are NaN, as are their standard errors.
    """

    classes: tuple[Label, ...]
    #: A_i, the mapped area of each map class (the strata).
    mapped_area: np.ndarray
    #: A_tot = sum of A_i.
    total_area: float
    #: n_i., the sample size of each stratum.
    stratum_sizes: np.ndarray
    #: n_ij / n_i. (rows of map classes with zero mapped area are 0).
    stratum_proportions: np.ndarray
    #: p_ij = W_i n_ij / n_i., the estimated error matrix in proportion of area.
    error_matrix: np.ndarray
    #: p_.j, the estimated proportion of area of each reference class.
    proportion: np.ndarray
    proportion_se: np.ndarray
    #: A_j = A_tot p_.j, the error-adjusted area of each class, and its standard error.
    area: np.ndarray
    se: np.ndarray
    #: Estimated covariance matrix of the adjusted areas (area units squared); its diagonal is se**2.
    covariance: np.ndarray
    users: np.ndarray
    users_se: np.ndarray
    producers: np.ndarray
    producers_se: np.ndarray
    overall: float
    overall_se: float

    def interval(self, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Normal confidence interval ``area -+ z * se`` of the adjusted areas at ``level``
        (Olofsson et al. 2013, eq. 12 and the interval after it). Not truncated at 0: it is the
        estimator's interval."""
        z = z_for(level)
        return self.area - z * self.se, self.area + z * self.se

    @property
    def lower95(self) -> np.ndarray:
        return self.area - Z95 * self.se

    @property
    def upper95(self) -> np.ndarray:
        return self.area + Z95 * self.se

    def table(self) -> pd.DataFrame:
        """One row per class: mapped and adjusted area, SE, 95% bounds, accuracies."""
        return pd.DataFrame({
            "class": list(self.classes), "mapped_area": self.mapped_area, "area": self.area, "se": self.se,
            "lower95": self.lower95, "upper95": self.upper95, "proportion": self.proportion,
            "proportion_se": self.proportion_se, "users": self.users, "users_se": self.users_se,
            "producers": self.producers, "producers_se": self.producers_se,
        })


def _aligned_area(sample: AccuracySample, mapped_area: np.ndarray | Sequence[float] | Mapping[Label, float]
                  ) -> np.ndarray:
    """Mapped areas aligned with ``sample.classes``; raises for negative or non-finite areas and
    for classes with mapped area that are not in the sample's class list."""
    k = len(sample.classes)
    problems: list[str] = []
    if isinstance(mapped_area, Mapping):
        index = {c: i for i, c in enumerate(sample.classes)}
        area = np.zeros(k, dtype=np.float64)
        for c, a in mapped_area.items():
            value = float(a)
            if c in index:
                area[index[c]] = value
            elif not np.isfinite(value) or value != 0.0:
                problems.append(f"map class {c!r} has mapped area {value:g} but no sample unit "
                                "(its variance is undefined)")
    else:
        area = np.asarray(mapped_area, dtype=np.float64)
        if area.shape != (k,):
            raise InputError(f"mapped areas must be one value per class of the sample ({k}), got shape {area.shape}")
    for c, a in zip(sample.classes, area, strict=True):
        if not np.isfinite(a) or a < 0:
            problems.append(f"map class {c!r} has mapped area {a!r}: must be finite and >= 0")
    if problems:
        raise InputError("unusable mapped areas for the accuracy sample", problems=problems)
    return area


def _checked(sample: AccuracySample, mapped_area: np.ndarray | Sequence[float] | Mapping[Label, float]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(A_i, W_i, n_i., active) after the checks every estimate needs; ``active`` marks the
    strata with mapped area."""
    area = _aligned_area(sample, mapped_area)
    n_i = sample.stratum_sizes
    total = float(area.sum())
    if not total > 0:
        raise InputError("the mapped areas sum to 0: there is nothing to estimate")
    active = area > 0
    problems: list[str] = []
    for c, a, n in zip(sample.classes, area, n_i, strict=True):
        if a > 0 and n == 0:
            problems.append(f"map class {c!r} has mapped area {a:g} but no sample unit (its variance is undefined)")
        elif a > 0 and n < 2:
            problems.append(f"map class {c!r} has {int(n)} sample unit: at least 2 are needed for a variance")
    if problems:
        raise InputError("the accuracy sample cannot support a stratified estimate", problems=problems)
    return area, area / total, n_i, active


def _stratum_proportions(sample: AccuracySample, active: np.ndarray) -> np.ndarray:
    """n_ij / n_i. on the strata with mapped area, 0 elsewhere."""
    n = sample.counts.astype(np.float64)
    n_i = n.sum(axis=1)
    q = np.zeros_like(n)
    q[active] = n[active] / n_i[active, None]
    return q


def covariance(sample: AccuracySample, mapped_area: np.ndarray | Sequence[float] | Mapping[Label, float]
               ) -> np.ndarray:
    """Estimated covariance matrix of the adjusted areas ``A_j`` (area units squared).

    Strata are sampled independently and within a stratum the counts are multinomial, so
    ``cov(p_.j, p_.k) = sum_i W_i^2 (q_ij [j == k] - q_ij q_ik) / (n_i. - 1)`` with
    ``q_ij = n_ij / n_i.``; the diagonal is the variance of Olofsson et al. (2013, eq. 10-12).
    Each row sums to 0: the adjusted areas always sum to ``A_tot``.
    """
    area, w, n_i, active = _checked(sample, mapped_area)
    q = _stratum_proportions(sample, active)
    k = len(sample.classes)
    cov = np.zeros((k, k), dtype=np.float64)
    for i in np.flatnonzero(active):
        qi = q[i]
        cov += (w[i] ** 2 / (n_i[i] - 1.0)) * (np.diag(qi) - np.outer(qi, qi))
    total = float(area.sum())
    return cov * total * total


def stratified_area(sample: AccuracySample,
                    mapped_area: np.ndarray | Sequence[float] | Mapping[Label, float]) -> AreaEstimate:
    """Error-adjusted area of each class, with accuracies, from a stratified random sample whose
    strata are the map classes (Olofsson et al. 2013; Olofsson et al. 2014).

    ``mapped_area`` is the area of each map class of the map (or of one site of it): an array
    aligned with ``sample.classes`` or a mapping class -> area (classes left out have area 0).
    Raises :class:`~carbon.errors.InputError` naming every map class that has mapped area but
    fewer than 2 sample units.

    Standard errors (Olofsson et al. 2014, eq. 5-7):

    * ``SE(O)^2 = sum_i W_i^2 U_i (1 - U_i) / (n_i. - 1)`` (Olofsson et al. 2014, eq. 5);
    * ``SE(U_i)^2 = U_i (1 - U_i) / (n_i. - 1)`` (Olofsson et al. 2014, eq. 6);
    * ``SE(P_j)^2 = [A_j.^2 (1 - P_j)^2 U_j (1 - U_j) / (n_j. - 1)
      + P_j^2 sum_{i != j} A_i.^2 (n_ij/n_i.)(1 - n_ij/n_i.) / (n_i. - 1)] / N_.j^2`` with
      ``A_i.`` the mapped area and ``N_.j = sum_i A_i. n_ij / n_i.`` the adjusted area
      (Olofsson et al. 2014, eq. 7); the first term is 0 when class ``j`` has no mapped area.
    """
    area, w, n_i, active = _checked(sample, mapped_area)
    total = float(area.sum())
    q = _stratum_proportions(sample, active)
    p = w[:, None] * q
    p_col = p.sum(axis=0)
    p_row = p.sum(axis=1)
    diag = np.diag(p).copy()

    nm1 = np.where(active, n_i - 1.0, np.inf)  # inactive strata: weight 0, term 0
    var_p = ((w[:, None] ** 2) * q * (1.0 - q) / nm1[:, None]).sum(axis=0)
    cov = covariance(sample, area)

    with np.errstate(invalid="ignore", divide="ignore"):
        users = np.where(p_row > 0, diag / p_row, np.nan)
        producers = np.where(p_col > 0, diag / p_col, np.nan)
    users_var = np.where(active, users * (1.0 - users) / nm1, np.nan)
    users_active = np.where(active, users, 0.0)
    overall_var = float((w**2 * users_active * (1.0 - users_active) / nm1).sum())

    # producer's accuracy (eq. 7); written with W_i in place of A_i: the ratio is the same
    cell_var = (w[:, None] ** 2) * q * (1.0 - q) / nm1[:, None]
    producers_var = np.full(len(sample.classes), np.nan)
    for j in range(len(sample.classes)):
        if not p_col[j] > 0:
            continue
        first = 0.0
        if active[j]:
            first = w[j] ** 2 * (1.0 - producers[j]) ** 2 * users[j] * (1.0 - users[j]) / nm1[j]
        others = float(cell_var[:, j].sum() - cell_var[j, j])
        producers_var[j] = (first + producers[j] ** 2 * others) / p_col[j] ** 2

    return AreaEstimate(
        classes=sample.classes,
        mapped_area=area,
        total_area=total,
        stratum_sizes=n_i,
        stratum_proportions=q,
        error_matrix=p,
        proportion=p_col,
        proportion_se=np.sqrt(var_p),
        area=total * p_col,
        se=total * np.sqrt(var_p),
        covariance=cov,
        users=users,
        users_se=np.sqrt(users_var),
        producers=producers,
        producers_se=np.sqrt(producers_var),
        overall=float(diag.sum()),
        overall_se=float(np.sqrt(overall_var)),
    )


def draw_proportions(sample: AccuracySample, strata: np.ndarray, n: int, rng: np.random.Generator
                     ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``n`` joint draws of the rows of proportions ``q_i = n_i. / n_i.`` of the strata marked
    in ``strata``: stratum ``i`` -> (the reference classes it has units of, ``(n, len(cols))``
    draws of its row, each summing to 1).

    Each stratum is drawn independently, as it was sampled: its row is drawn from a Dirichlet
    distribution with parameters ``n_ij (n_i. - 2) / n_i.``. With total concentration
    ``n_i. - 2`` the Dirichlet has mean exactly ``n_ij / n_i.`` and covariance exactly
    ``(q_ij [j == k] - q_ij q_ik) / (n_i. - 1)``, the within-stratum terms of the estimator's
    variance (Olofsson et al. 2013, eq. 10-12). For ``n_i. = 2`` the limit is used: the row is
    one reference class, drawn with probabilities ``q_i``. A stratum whose units all agree does
    not vary. Maps that share one sample share these draws (the error rates are one unknown,
    estimated once), whatever their mapped areas.
    """
    if n < 0:
        raise InputError(f"the number of draws must be >= 0, got {n}")
    counts = sample.counts.astype(np.float64)
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for i in np.flatnonzero(np.asarray(strata, dtype=bool)):
        n_i = float(counts[i].sum())
        if n_i < 2:
            raise InputError(f"map class {sample.classes[i]!r} has {int(n_i)} sample unit(s): at least 2 are needed "
                             "for a variance")
        q = counts[i] / n_i
        cols = np.flatnonzero(q > 0)
        if cols.size == 1:
            out[int(i)] = (cols, np.ones((n, 1)))
            continue
        concentration = n_i - 2.0
        if concentration > 0:
            rows = rng.dirichlet(q[cols] * concentration, size=n)
        else:
            rows = np.zeros((n, cols.size))
            rows[np.arange(n), rng.choice(cols.size, size=n, p=q[cols])] = 1.0
        out[int(i)] = (cols, rows)
    return out


def areas_from_proportions(mapped_area: np.ndarray, rows: dict[int, tuple[np.ndarray, np.ndarray]], n: int
                           ) -> np.ndarray:
    """``(n, classes)`` draws of the adjusted areas ``sum_i A_i q_i`` from drawn rows of
    proportions (:func:`draw_proportions`); ``mapped_area`` is aligned with the sample's classes
    and every stratum with mapped area must have drawn rows."""
    area = np.asarray(mapped_area, dtype=np.float64)
    out = np.zeros((n, len(area)), dtype=np.float64)
    for i in np.flatnonzero(area > 0):
        cols, drawn = rows[int(i)]
        out[:, cols] += float(area[i]) * drawn
    return out


def draw_areas(estimate: AreaEstimate, n: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, classes)`` joint draws of the adjusted areas, for a Monte Carlo: each stratum's row
    of proportions drawn as :func:`draw_proportions` says, and the draw of the areas is
    ``sum_i A_i q_i``. The draws have the estimate as mean and :func:`covariance` as
    covariance; every draw is non-negative and sums to ``A_tot``; a class with no sample unit in
    any mapped stratum is 0 in every draw.
    """
    sample = AccuracySample(estimate.classes, np.round(estimate.stratum_proportions
                                                       * estimate.stratum_sizes[:, None]).astype(np.int64))
    rows = draw_proportions(sample, estimate.mapped_area > 0, n, rng)
    out = areas_from_proportions(estimate.mapped_area, rows, n)
    if n:
        sums = out.sum(axis=1, keepdims=True)
        out *= estimate.total_area / sums
    return out
