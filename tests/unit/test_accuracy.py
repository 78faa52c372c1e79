"""The stratified estimator of area from an accuracy-assessment sample (carbon/rules/accuracy.py)
against published worked examples and hand-worked numbers.

Where the numbers come from:

* Olofsson et al. (2013), Remote Sens. Environ. 129: 122-131, example 1: the input (strata of
  22,353 / 1,122,543 / 610,228 pixels; counts rows = map, columns = reference) is the one the R
  package mapaccuracy 0.1.2 uses in its examples, R/olofsson.R lines 40-46, where lines 48-61
  name the paper's equations each output is to be compared with (eq. 9, 10, 12, the 95% CI,
  eq. 14, 15, 16, Table 4). The package prints no values (it has no tests/ directory and its
  examples only call the function), and the paper's text could not be consulted here, so the
  expected values below are those equations evaluated by hand, every term written out.
* Olofsson et al. (2014), Remote Sens. Environ. 148: 42-57, Table 8 example: the input is the
  one of mapaccuracy R/olofsson.R lines 81-90; lines 93-109 point to the paper's results on
  p. 54, which are the expected values (printed there to 2 decimals for accuracies and to 1 ha
  for areas and 95% half-widths, the half-widths computed with 1.96); the estimated error
  matrix is the paper's Table 9 (4 decimals).
* Standard errors of user's, producer's and overall accuracy: Olofsson et al. (2014) eq. 5-7,
  as mapaccuracy R/olofsson.R implements them (lines 181-189 overall, 193-202 user's, 205-232
  producer's; area lines 235-245).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from carbon.errors import InputError
from carbon.rules.accuracy import (
    Z95,
    AccuracySample,
    AreaEstimate,
    covariance,
    draw_areas,
    stratified_area,
    z_for,
)

# --- Olofsson et al. (2013), example 1 ----------------------------------------------------------
# mapaccuracy R/olofsson.R lines 41-44: r/m vectors giving, rows = map class 1, 2, 3 and
# columns = reference class 1, 2, 3, the counts (97, 0, 3), (3, 279, 18), (2, 1, 97);
# Nh = 22353, 1122543, 610228 pixels; A_tot = 1,755,124 pixels; n_i. = 100, 300, 100.
OLOF13_CLASSES = (1, 2, 3)
OLOF13_COUNTS = [[97, 0, 3], [3, 279, 18], [2, 1, 97]]
OLOF13_AREA = [22353, 1122543, 610228]


@pytest.fixture()
def olof13() -> AreaEstimate:
    return stratified_area(AccuracySample.from_matrix(OLOF13_CLASSES, OLOF13_COUNTS), OLOF13_AREA)


def test_olofsson_2013_adjusted_areas_eq_9_10(olof13: AreaEstimate) -> None:
    e = olof13
    # eq. 10 (R line 50, a$area[1]*sum(Nh)): A_j = sum_i A_i n_ij / n_i.
    #   A_1 = 22353*97/100 + 1122543*3/300 + 610228*2/100 = 21682.41 + 11225.43 + 12204.56 = 45112.40
    #   A_2 = 0 + 1122543*279/300 + 610228*1/100 = 1043964.99 + 6102.28 = 1050067.27
    #   A_3 = 22353*3/100 + 1122543*18/300 + 610228*97/100 = 670.59 + 67352.58 + 591921.16 = 659944.33
    assert e.area == pytest.approx([45112.40, 1050067.27, 659944.33], rel=1e-12)
    assert e.area.sum() == pytest.approx(1755124.0, rel=1e-14)
    # eq. 9 (R line 49, a$area[1]): p_.1 = 45112.40 / 1755124 = 0.025703255
    assert e.proportion[0] == pytest.approx(0.025703255, rel=1e-8)
    assert e.total_area == 1755124.0


def test_olofsson_2013_standard_errors_and_interval_eq_12(olof13: AreaEstimate) -> None:
    e = olof13
    # eq. 12 (R line 51, a$SEa[1]*sum(Nh)): SE(A_j)^2 = sum_i A_i^2 q_ij (1 - q_ij) / (n_i. - 1)
    #   class 1: 22353^2 * .97*.03/99 + 1122543^2 * .01*.99/299 + 610228^2 * .02*.98/99
    #          = 146868.76 + 41722466.86 + 73723363.18 = 115592698.80 -> SE = 10751.4045
    #   class 2: 0 + 1122543^2 * .93*.07/299 + 610228^2 * .01*.99/99
    #          = 274356827.50 + 37237821.20 = 311594648.70 -> SE = 17652.0438
    #   class 3: 22353^2 * .03*.97/99 + 1122543^2 * .06*.94/299 + 610228^2 * .97*.03/99
    #          = 146868.76 + 237691629.36 + 109456625.95 = 347295124.07 -> SE = 18635.8559
    assert e.se == pytest.approx([10751.4045, 17652.0438, 18635.8559], rel=1e-8)
    assert e.proportion_se[0] == pytest.approx(10751.4045 / 1755124, rel=1e-8)
    # 95% CI (R lines 52-53, qnorm(0.975) = 1.959963984540054): 45112.40 -+ 21072.366
    assert e.lower95[0] == pytest.approx(45112.40 - 21072.366, abs=1e-3)
    assert e.upper95[0] == pytest.approx(45112.40 + 21072.366, abs=1e-3)
    lo, hi = e.interval(0.95)
    assert np.array_equal(lo, e.lower95) and np.array_equal(hi, e.upper95)
    # another level: z(0.90) = 1.6448536269514722
    lo90, hi90 = e.interval(0.90)
    assert hi90[0] - e.area[0] == pytest.approx(1.6448536269514722 * 10751.4045, rel=1e-8)


def test_olofsson_2013_accuracies_eq_14_16(olof13: AreaEstimate) -> None:
    e = olof13
    # eq. 14 / Table 4 (R lines 54, 57): U_i = p_ii / p_i. = n_ii / n_i. = .97, .93, .97
    assert e.users == pytest.approx([0.97, 0.93, 0.97], rel=1e-12)
    # SE(U_i) = sqrt(U(1-U)/(n_i.-1)) (R lines 196, 202): sqrt(.0291/99), sqrt(.0651/299), sqrt(.0291/99)
    assert e.users_se == pytest.approx([0.017144661, 0.014755533, 0.017144661], rel=1e-7)
    # eq. 15 / Table 4 (R lines 55, 59): P_j = p_jj / p_.j
    #   21682.41/45112.40 = 0.48063082, 1043964.99/1050067.27 = 0.99418868, 591921.16/659944.33 = 0.89692590
    assert e.producers == pytest.approx([0.48063082, 0.99418868, 0.89692590], rel=1e-7)
    # eq. 16 (R line 56): O = (21682.41 + 1043964.99 + 591921.16) / 1755124 = 0.94441678
    assert e.overall == pytest.approx(0.94441678, rel=1e-8)
    # SE(O)^2 = sum_i W_i^2 U_i(1-U_i)/(n_i.-1) (R lines 182-189)
    #   = (22353/1755124)^2*.0291/99 + (1122543/1755124)^2*.0651/299 + (610228/1755124)^2*.0291/99
    #   = 4.767754e-8 + 8.906358e-5 + 3.553256e-5 -> SE = 0.01116440
    assert e.overall_se == pytest.approx(0.01116440, rel=1e-6)
    # SE(P_j)^2 = [A_j^2 (1-P_j)^2 U_j(1-U_j)/(n_j.-1) + P_j^2 sum_{i!=j} A_i^2 q_ij(1-q_ij)/(n_i.-1)] / A_j(adj)^2
    # (R lines 216-231). Class 1: first term 22353^2 (1-.48063082)^2 .0291/99 = 39617.017;
    # sum = 41722466.856 + 73723363.181 = 115445830.036 (the class-1 terms of eq. 12 for i = 2, 3);
    # SE = sqrt(39617.017 + .48063082^2 * 115445830.036) / 45112.40 = 0.11455846
    # Class 2: 9265.4345 + .99418868^2 * 37237821.198 -> / 1050067.27 -> 0.0057782786
    # Class 3: 1162896.83 + .89692590^2 * 237838498.12 -> / 659944.33 -> 0.021023553
    assert e.producers_se == pytest.approx([0.11455846, 0.0057782786, 0.021023553], rel=1e-6)
    # the estimated error matrix (Table 4 layout, R line 61): p_ij = W_i n_ij / n_i.
    assert e.error_matrix[0] == pytest.approx([21682.41 / 1755124, 0.0, 670.59 / 1755124], rel=1e-12)
    assert e.error_matrix.sum() == pytest.approx(1.0, rel=1e-14)


# --- Olofsson et al. (2014), Table 8 -------------------------------------------------------------
# mapaccuracy R/olofsson.R lines 82-90: rows = map class, columns = reference class, classes
# Deforestation, Forest gain, Stable forest, Stable non-forest; mapped areas 200,000 / 150,000 /
# 3,200,000 / 6,450,000 Landsat pixels of 30 m x 30 m = 18,000 / 13,500 / 288,000 / 580,500 ha.
OLOF14_CLASSES = ("deforestation", "forest_gain", "stable_forest", "stable_non_forest")
OLOF14_COUNTS = [[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]]
OLOF14_AREA_HA = {c: px * 30**2 / 10_000 for c, px in zip(OLOF14_CLASSES, (200_000, 150_000, 3_200_000, 6_450_000),
                                                            strict=True)}


@pytest.fixture()
def olof14() -> AreaEstimate:
    return stratified_area(AccuracySample.from_matrix(OLOF14_CLASSES, OLOF14_COUNTS), OLOF14_AREA_HA)


def test_olofsson_2014_areas_in_hectares(olof14: AreaEstimate) -> None:
    e = olof14
    # Olofsson et al. 2014 p. 54, right-hand column (R lines 101-109): area +- 1.96 SE, in ha
    assert e.area == pytest.approx([21158, 11686, 285770, 581386], abs=0.5)
    assert 1.96 * e.se == pytest.approx([6158, 3756, 15510, 16282], abs=0.5)
    assert e.total_area == pytest.approx(900_000.0)


def test_olofsson_2014_accuracies(olof14: AreaEstimate) -> None:
    e = olof14
    # Olofsson et al. 2014 p. 54, left-hand column (R lines 93-99), 2 decimals
    assert e.users == pytest.approx([0.88, 0.73, 0.93, 0.96], abs=0.005)
    assert 1.96 * e.users_se == pytest.approx([0.07, 0.10, 0.04, 0.02], abs=0.005)
    assert e.producers == pytest.approx([0.75, 0.85, 0.93, 0.96], abs=0.005)
    assert e.overall == pytest.approx(0.95, abs=0.005)
    assert 1.96 * e.overall_se == pytest.approx(0.02, abs=0.005)
    # producer's accuracy half-widths: the paper prints 0.21, 0.23, 0.03, 0.01; eq. 7 as
    # mapaccuracy computes it (R lines 215-232) reproduces the first and third, and gives
    # 0.2544 and 0.0184 for forest gain and stable non-forest, so those two are checked against
    # eq. 7 evaluated by hand rather than against the printed values.
    half = 1.96 * e.producers_se
    assert half[0] == pytest.approx(0.21, abs=0.005)
    assert half[2] == pytest.approx(0.03, abs=0.005)
    # forest gain by hand: W = (.02, .015, .32, .645); column "forest gain" of the counts has
    # q_i = (0/75, 55/75, 0/165, 1/325); p_.gain = .015*55/75 + .645/325 = .011 + .0019846;
    # P = .011 / p_.gain; U = 55/75; SE(P)^2 = [W_gain^2 (1-P)^2 U(1-U)/74
    #                                          + P^2 sum_{i != gain} W_i^2 q_i(1-q_i)/(n_i.-1)] / p_.gain^2
    w = np.array([18_000, 13_500, 288_000, 580_500]) / 900_000
    q_gain = np.array([0 / 75, 55 / 75, 0 / 165, 1 / 325])  # column "forest gain", per stratum
    n_i = np.array([75, 75, 165, 325])
    p_gain = float((w * q_gain).sum())  # 0.011 + 0.0019846 = 0.0129846
    prod = w[1] * q_gain[1] / p_gain
    u = 55 / 75
    first = w[1] ** 2 * (1 - prod) ** 2 * u * (1 - u) / 74
    rest = float(sum(w[i] ** 2 * q_gain[i] * (1 - q_gain[i]) / (n_i[i] - 1) for i in (0, 2, 3)))
    assert half[1] == pytest.approx(1.96 * math.sqrt(first + prod**2 * rest) / p_gain, rel=1e-12)
    assert half[1] == pytest.approx(0.2544, abs=5e-5)
    assert half[3] == pytest.approx(0.0184, abs=5e-5)


def test_olofsson_2014_error_matrix_table_9(olof14: AreaEstimate) -> None:
    # Olofsson et al. 2014 Table 9: estimated area proportions, rows = map, columns = reference
    expected = [[0.0176, 0.0, 0.0013, 0.0011],
                [0.0, 0.0110, 0.0016, 0.0024],
                [0.0019, 0.0, 0.2967, 0.0213],
                [0.0040, 0.0020, 0.0179, 0.6212]]
    np.testing.assert_allclose(olof14.error_matrix, expected, atol=0.00005)


# --- a hand-worked 2-class case ------------------------------------------------------------------
def test_two_classes_by_hand() -> None:
    # map: forest 60 ha, non-forest 40 ha (A_tot = 100, W = .6, .4); 10 sample points each:
    #   map forest     -> reference forest 8, non-forest 2   (q = .8, .2)
    #   map non-forest -> reference forest 1, non-forest 9   (q = .1, .9)
    # p = [[.6*.8, .6*.2], [.4*.1, .4*.9]] = [[.48, .12], [.04, .36]]
    # p_.forest = .52 -> 52 ha; p_.non-forest = .48 -> 48 ha
    # Var(p_.forest) = .6^2*.8*.2/9 + .4^2*.1*.9/9 = (.0576 + .0144)/9 = .008 (same for non-forest)
    #   -> SE = sqrt(.008) = .0894427 -> 8.94427 ha; cov(forest, non-forest) = -.008 * 100^2 = -80 ha^2
    # U = .48/.6 = .8, .36/.4 = .9; SE(U) = sqrt(.16/9) = .133333, sqrt(.09/9) = .1
    # P = .48/.52 = .9230769, .36/.48 = .75; O = .84; SE(O)^2 = .36*.16/9 + .16*.09/9 = .008
    # SE(P_forest)^2 = [60^2 (1/13)^2 .16/9 + (12/13)^2 40^2 .09/9] / 52^2
    #               = [.3786982 + 13.633136] / 2704 = .00518189 -> .0719854
    # SE(P_non)^2 = [40^2 (.25)^2 .09/9 + .75^2 60^2 .16/9] / 48^2 = [1 + 36] / 2304 = .01605903 -> .1267242
    s = AccuracySample.from_matrix(("forest", "non_forest"), [[8, 2], [1, 9]])
    e = stratified_area(s, {"forest": 60.0, "non_forest": 40.0})
    assert e.area == pytest.approx([52.0, 48.0], rel=1e-12)
    assert e.se == pytest.approx([8.94427191, 8.94427191], rel=1e-8)
    assert e.covariance == pytest.approx(np.array([[80.0, -80.0], [-80.0, 80.0]]), rel=1e-12)
    assert e.users == pytest.approx([0.8, 0.9], rel=1e-12)
    assert e.users_se == pytest.approx([0.1333333333, 0.1], rel=1e-9)
    assert e.producers == pytest.approx([12 / 13, 0.75], rel=1e-12)
    assert e.producers_se == pytest.approx([0.0719854, 0.1267242], rel=1e-6)
    assert e.overall == pytest.approx(0.84, rel=1e-12)
    assert e.overall_se == pytest.approx(math.sqrt(0.008), rel=1e-12)
    assert covariance(s, {"forest": 60.0, "non_forest": 40.0}) == pytest.approx(e.covariance)
    t = e.table()
    assert list(t["class"]) == ["forest", "non_forest"] and t.loc[0, "area"] == pytest.approx(52.0)


# --- sub-areas (a site's own mapped areas) -------------------------------------------------------
def test_site_areas_proportional_to_the_map_give_proportional_adjusted_areas(olof13: AreaEstimate) -> None:
    s = AccuracySample.from_matrix(OLOF13_CLASSES, OLOF13_COUNTS)
    site = stratified_area(s, np.array(OLOF13_AREA, dtype=float) * 0.001)
    assert site.area == pytest.approx(olof13.area * 0.001, rel=1e-12)
    assert site.se == pytest.approx(olof13.se * 0.001, rel=1e-12)
    assert site.proportion == pytest.approx(olof13.proportion, rel=1e-12)
    assert site.users == pytest.approx(olof13.users) and site.producers == pytest.approx(olof13.producers)


def test_a_perfect_map_gives_back_the_mapped_area_with_no_error() -> None:
    s = AccuracySample.from_matrix((10, 20, 30), np.diag([50, 40, 30]))
    e = stratified_area(s, {10: 123.0, 20: 456.0, 30: 7.5})
    assert e.area == pytest.approx([123.0, 456.0, 7.5], rel=1e-14)
    assert np.all(e.se == 0.0) and np.all(e.covariance == 0.0)
    assert np.array_equal(e.lower95, e.upper95)
    assert e.users == pytest.approx([1.0, 1.0, 1.0]) and e.producers == pytest.approx([1.0, 1.0, 1.0])
    assert e.overall == pytest.approx(1.0) and e.overall_se == 0.0
    draws = draw_areas(e, 100, np.random.default_rng(0))
    assert np.allclose(draws, [123.0, 456.0, 7.5], rtol=1e-14)


def test_a_class_absent_from_the_site_contributes_nothing() -> None:
    # class 2 is not in the site: its stratum (even with a single sample unit) plays no part
    s = AccuracySample.from_matrix((1, 2, 3), [[9, 1, 0], [0, 1, 0], [1, 0, 4]])
    e = stratified_area(s, {1: 100.0, 3: 50.0})
    # A_1 = 100*.9 + 50*.2 = 100; A_2 = 100*.1 = 10; A_3 = 50*.8 = 40
    assert e.area == pytest.approx([100.0, 10.0, 40.0], rel=1e-12)
    assert math.isnan(e.users[1]) and math.isnan(e.users_se[1])
    # class 2 is only reached through stratum 1: P_2 = 0 and the first term of eq. 7 is 0
    assert e.producers[1] == 0.0 and e.producers_se[1] == 0.0
    assert e.mapped_area[1] == 0.0


def test_a_class_seen_only_in_the_reference_gets_area_and_no_users_accuracy() -> None:
    t = pd.DataFrame({"map_code": [1, 1, 1, 2, 2, 1], "reference_code": [1, 2, 7, 2, 1, 1],
                      "count": [4, 1, 2, 5, 1, 3]})
    s = AccuracySample.from_long(t)
    assert s.classes == (1, 2, 7)
    assert s.counts.tolist() == [[7, 1, 2], [1, 5, 0], [0, 0, 0]]
    assert s.counts.dtype == np.int64 and s.stratum_sizes.tolist() == [10, 6, 0]
    e = stratified_area(s, [10.0, 6.0, 0.0])
    assert e.area == pytest.approx([7.0 + 1.0, 1.0 + 5.0, 2.0], rel=1e-12)
    assert math.isnan(e.users[2]) and e.producers[2] == 0.0
    # explicit order, with an extra class and no sample
    s2 = AccuracySample.from_long(t, classes=[7, 2, 1, 9])
    assert s2.classes == (7, 2, 1, 9) and s2.counts[2].tolist() == [2, 1, 7, 0]


# --- bad inputs ----------------------------------------------------------------------------------
def test_a_stratum_with_one_sample_unit_is_an_error_naming_the_class() -> None:
    s = AccuracySample.from_matrix((1, 2, 3), [[9, 1, 0], [0, 1, 0], [1, 0, 4]])
    with pytest.raises(InputError) as err:
        stratified_area(s, [100.0, 20.0, 50.0])
    assert "map class 2 has 1 sample unit" in str(err.value)
    assert len(err.value.problems) == 1


def test_a_mapped_class_absent_from_the_sample_is_an_error_naming_the_class() -> None:
    s = AccuracySample.from_matrix(("forest", "cropland"), [[8, 2], [1, 9]])
    with pytest.raises(InputError) as err:
        stratified_area(s, {"forest": 10.0, "cropland": 5.0, "wetland": 2.0})
    assert "'wetland'" in str(err.value) and "no sample unit" in str(err.value)
    # a class in the list but with no sample row
    s3 = AccuracySample.from_matrix(("forest", "cropland", "wetland"), [[8, 2, 0], [1, 9, 0], [0, 0, 0]])
    with pytest.raises(InputError, match="map class 'wetland' has mapped area 2 but no sample unit"):
        stratified_area(s3, [10.0, 5.0, 2.0])
    # with zero mapped area it is no error
    assert stratified_area(s3, [10.0, 5.0, 0.0]).area.sum() == pytest.approx(15.0)
    assert stratified_area(s, {"forest": 10.0, "cropland": 5.0, "wetland": 0.0}).area.sum() == pytest.approx(15.0)


def test_other_bad_inputs() -> None:
    with pytest.raises(InputError, match="must not be negative"):
        AccuracySample.from_matrix((1, 2), [[3, -1], [0, 2]])
    with pytest.raises(InputError, match="2 x 2"):
        AccuracySample((1, 2), np.ones((2, 3), dtype=np.int64))
    with pytest.raises(InputError, match="repeated"):
        AccuracySample.from_matrix((1, 1), [[3, 1], [0, 2]])
    s = AccuracySample.from_matrix((1, 2), [[3, 1], [1, 2]])
    with pytest.raises(InputError, match="sum to 0"):
        stratified_area(s, [0.0, 0.0])
    with pytest.raises(InputError, match="must be finite and >= 0"):
        stratified_area(s, [-1.0, 3.0])
    with pytest.raises(InputError, match="one value per class"):
        stratified_area(s, [1.0, 2.0, 3.0])
    with pytest.raises(InputError, match="not in the class list"):
        AccuracySample.from_long(pd.DataFrame({"map_code": [1], "reference_code": [5], "count": [2]}), classes=[1])
    with pytest.raises(InputError):
        z_for(1.0)
    assert z_for(0.95) == Z95 == 1.959963984540054


# --- the draws -----------------------------------------------------------------------------------
def _check_draws(e: AreaEstimate, n: int, seed: int) -> np.ndarray:
    draws = draw_areas(e, n, np.random.default_rng(seed))
    assert draws.shape == (n, len(e.classes))
    assert np.all(draws >= 0.0)
    np.testing.assert_allclose(draws.sum(axis=1), e.total_area, rtol=1e-12)
    # the mean is within 4 standard errors of the mean of the estimate (classes with SE 0 are exact)
    tol = 4.0 * e.se / math.sqrt(n)
    assert np.all(np.abs(draws.mean(axis=0) - e.area) <= tol + 1e-9 * e.total_area)
    return draws


def test_draws_have_the_estimate_as_mean_sum_to_the_total_and_are_never_negative(olof13: AreaEstimate, olof14: AreaEstimate) -> None:
    for e in (olof13, olof14):
        draws = _check_draws(e, 20_000, 7)
        # and their spread is the estimator's: SDs within 5% of the SEs for 20,000 draws (the
        # draws match the estimator's covariance exactly in expectation; 5% leaves room for the
        # skewed marginals of classes seen once or twice in a stratum)
        assert draws.std(axis=0) == pytest.approx(e.se, rel=0.05)


def test_draws_with_a_stratum_of_two_units() -> None:
    # a stratum of 2 units is drawn as one whole reference class (the Dirichlet's limit)
    s = AccuracySample.from_matrix((1, 2, 3), [[1, 1, 0], [1, 8, 1], [0, 0, 5]])
    e = stratified_area(s, [30.0, 60.0, 10.0])
    # Var(A_1) = 30^2*.5*.5/1 + 60^2*.1*.9/9 = 225 + 36 = 261
    assert e.se[0] == pytest.approx(math.sqrt(261.0), rel=1e-12)
    draws = _check_draws(e, 40_000, 11)
    assert draws.std(axis=0) == pytest.approx(e.se, rel=0.03)
    np.testing.assert_allclose(np.cov(draws.T), e.covariance, rtol=0.05, atol=2.5)
    assert draw_areas(e, 0, np.random.default_rng(0)).shape == (0, 3)
