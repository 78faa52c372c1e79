"""The report's words in English and Chinese: headings, labels, explanations and figure labels.

``Messages(lang)`` gives a message by key (``msg("sinks")``), formatted with its arguments;
a message that is not translated falls back to English. Class labels come from the legends
(``label_zh`` column, else ``label``); carbon classes, pools and methods are named here.
"""

from __future__ import annotations

import re
from typing import Any

#: The report's languages; the configuration's ``report_language`` and ``--lang`` pick one.
LANGUAGES = ("en", "zh")
DEFAULT_LANGUAGE = "en"

POOLS = {
    "en": {"agb": "above-ground biomass", "bgb": "below-ground biomass", "deadwood": "dead wood",
           "litter": "litter", "soc": "soil organic carbon"},
    "zh": {"agb": "地上生物量", "bgb": "地下生物量", "deadwood": "枯死木", "litter": "凋落物", "soc": "土壤有机碳"},
}

CARBON_CLASSES = {
    "en": {"forest": "forest", "shrubland": "shrubland", "grassland": "grassland", "cropland": "cropland",
           "wetland": "wetland", "water": "water", "settlement": "settlement", "barren": "barren",
           "mining_land": "mining land", "snow_ice": "snow and ice"},
    "zh": {"forest": "林地", "shrubland": "灌木林地", "grassland": "草地", "cropland": "耕地", "wetland": "湿地",
           "water": "水域", "settlement": "建设用地", "barren": "裸地", "mining_land": "采矿用地", "snow_ice": "冰川及永久积雪"},
}

METHODS = {
    "en": {"stock_difference": "stock difference", "gain_loss": "gain-loss"},
    "zh": {"stock_difference": "储量差法", "gain_loss": "增加-损失法"},
}

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "title": "carbon-sink report",
        "units": "Units: carbon stocks in tonnes of carbon (t C); sinks in tonnes of CO2 equivalent (t CO2e), "
                 "sink = stock change x 44/12. Sign: <b>removals are positive</b>, emissions negative. Areas are "
                 "ellipsoidal hectares, boundary pixels counted by the share inside the site. Methods: "
                 '<a href="methods.html">the methods document</a>.',
        "language": "Language",
        # headings
        "h_sinks": "Sinks", "h_stocks": "Stocks", "h_areas": "Areas by carbon class",
        "h_figures": "Maps and charts", "h_transitions": "Land-cover transitions", "h_trace": "The auditor's trace",
        "h_method": "Method and rules applied to this site", "h_coefficients": "Coefficients used",
        "h_gains": "Gains and losses by pool", "h_provenance": "Provenance", "h_runs": "Every run of this site",
        "h_inputs": "Input files",
        # columns
        "period": "period", "full_period": "full period", "area_ha": "area (ha)", "stock_start": "stock start (t C)",
        "stock_end": "stock end (t C)", "change_tc": "change (t C)", "sink": "sink (t CO2e)",
        "interval90_co2": "90% interval (t CO2e)", "u90": "U90 (%)", "conservative": "conservative sink (t CO2e)",
        "annual": "annual sink (t CO2e/yr)", "method": "method", "year": "year", "nodata_ha": "no data (ha)",
        "pool_tc": "{pool} (t C)", "total_tc": "total (t C)", "interval95_tc": "95% interval (t C)",
        "carbon_class": "carbon class", "mapped_ha": "mapped (ha)", "adjusted_ha": "adjusted (ha)",
        "interval95_ha": "95% interval (ha)", "unadjusted": "unadjusted", "to": "{lo} to {hi}",
        "pool": "pool", "density": "stock (t C/ha)", "sd": "SD (t C/ha)", "sd_source": "SD from",
        "growth_curve": "growth curve", "source": "source of the coefficient", "gain_tc": "{pool} gain (t C)",
        "loss_tc": "{pool} loss (t C)", "from_to": "from \\ to (ha)", "site_run": "site run", "run": "run",
        "status": "status", "time": "time", "legend": "legend", "input_file": "input file", "sha256": "SHA-256",
        "accuracy_sample": "accuracy sample",
        # provenance keys
        "p_site": "site", "p_run": "ledger run", "p_computed": "computed at", "p_coefficients": "coefficient set",
        "p_code": "code version", "p_uncertainty": "uncertainty",
        # sentences
        "no_sinks": "No sink in the ledger for this site.", "no_areas": "No class areas in the ledger for this site.",
        "no_transitions": "No transition matrix (a single map year).",
        "transitions_of": "Land-cover transitions {y0} to {y1}, hectares.",
        "areas_unadjusted": "Areas are <b>unadjusted</b>: no map year of this site has an accuracy-assessment sample, "
                            "so the areas, stocks and sinks are the mapped ones and carry no map error "
                            "(methods §8).",
        "areas_adjusted": "Areas <b>adjusted for map error</b> in {years} with the accuracy sample(s) {samples} "
                          "(stratified estimator, Olofsson et al. 2013): the stocks and sinks above rest on the "
                          "adjusted areas, and their intervals include the area uncertainty (methods §8).",
        "no_figures": "No figure could be drawn (see above).",
        "coefficients_intro": "The coefficient behind each carbon class and pool at this site, as the run behind "
                              "the current estimate recorded it: its value, its standard deviation or the default "
                              "applied when the table gives none, the growth curve it follows and its source.",
        "no_coefficients": "The run behind this estimate ({run}) kept no coefficient table for this site: the "
                           "coefficients cannot be shown.",
        "gains_intro": "Under gain-loss, the carbon gained (growth) and lost (clearing, conversion) in each "
                       "biomass pool and period, t C; soil organic carbon changes by stock difference (methods §9).",
        "gains_stock_difference": "Under stock difference the sink is the change of stocks between the maps: no "
                                  "gains and losses are counted separately (the columns are zero; methods §6).",
        "m_stock_difference": "Method: <b>stock difference</b>. Each year's stock is, for every carbon class and "
                              "pool, the class's area times its coefficient (t C/ha); a period's sink is the "
                              "change of the total stock between its first and last map, times 44/12 "
                              "(methods §2, §6).",
        "m_gain_loss": "Method: <b>gain-loss</b>. Biomass pools grow from the year a pixel enters a class, along "
                       "the class's growth curve up to its stock, and are lost at once when the pixel leaves it; "
                       "soil organic carbon moves linearly to the new class's stock over the transition period "
                       "(methods §9).",
        "m_initial_age": "Stands present at the start are taken to be {age} years old.",
        "m_period": "The full period starts in {start} (methods §6).",
        "m_areas_adjusted": "Areas are adjusted for map error with each year's accuracy sample; the stocks and "
                            "sinks rest on the adjusted areas (methods §8).",
        "m_areas_mapped": "Areas are the mapped ones: no accuracy sample, no map error carried (methods §8).",
        "m_monte_carlo": "Uncertainty: {draws} Monte Carlo draws (seed {seed}) of the coefficients"
                         "{areas}; intervals are the 2.5-97.5 and 5-95 percentiles (methods §10).",
        "m_mc_areas": " and the adjusted areas",
        "m_rule_ar_tool14": "Conservative sink: the AR-TOOL14 deduction, by the half-width of the 90% interval "
                            "as a share of the sink (methods §10).",
        "m_rule_lower90": "Conservative sink: the lower bound of the 90% interval (methods §10).",
        "m_sd_default": "A coefficient without an SD gets the default: {policy}.",
        "m_sd_defaulted": "Classes and pools given the default SD: {items}.",
        "m_sd_unknown": "Classes and pools of unknown uncertainty: {items}.",
        "m_flicker": "Pixels that flicker out of a class for one year and back were not counted as changes: "
                     "{ha} ha in all (methods §9).",
        "m_grid": "Every year is read on the grid of the {year} map ({w} x {h} pixels); boundary pixels count "
                  "by the share inside the site (methods §4, §5).",
        "no_provenance": "The run behind this estimate kept no provenance for this site: the method and rules "
                         "are those of the sinks table above.",
        # figures
        "fig_land_cover": "Land cover of each map year with the site boundary",
        "fig_density": "Stock density, first and last year, and its change",
        "fig_stock": "Carbon stock by pool over the years, with the 95% interval",
        "lc_title": "Land cover with the site boundary (black; white = no data)",
        "density_title": "stock density {year} (t C/ha)",
        "change_title": "change {start}-{end} (t C/ha; removals > 0)",
        "chart_title": "{site}: carbon stock by pool", "chart_total": "total",
        "chart_interval": "95% interval (Monte Carlo)", "chart_x": "year", "chart_y": "t C",
        # problems
        "latest_failed": "The latest run ({run}, {time}) failed: {error}",
        "no_success": "No successful run: no estimate to show.",
        "from_last_success": "The figures below are from the last successful run ({run}).",
        "uncertainty_part": "Uncertainty: {part}.",
        "year_unreadable": "Map year {year} cannot be read: {error}",
        "no_land_cover": "No land-cover map can be drawn: no map year of the site can be read.",
        "lc_failed": "Land-cover maps cannot be drawn: {error}",
        "maps_not_written": "The stock density maps of this estimate were not written (the run that published it "
                            "wrote no maps: re-run the site with --maps or with reports)",
        "maps_missing": "; missing: {names}",
        "density_failed": "Stock density maps cannot be drawn: {error}",
        "chart_failed": "The stock chart cannot be drawn: {error}",
        # portfolio
        "portfolio_title": "carbon-sink portfolio", "portfolio_h": "All sites",
        "portfolio_intro": "Every site with a published estimate: its full-period sink (t CO2e, removals "
                           "positive) with its 90% interval and its conservative sink. The map colours each site "
                           "by its full-period sink.",
        "portfolio_map": "The sites coloured by their full-period sink (t CO2e)",
        "site": "site", "name": "name", "page": "page", "open": "site page", "no_estimate": "no estimate",
        "map_x": "longitude", "map_y": "latitude", "map_bar": "full-period sink (t CO2e)",
        "methods_title": "Methods",
    },
    "zh": {
        "title": "carbon-sink 碳汇报告",
        "units": "单位：碳储量以吨碳（t C）计；碳汇以吨二氧化碳当量（t CO2e）计，碳汇 = 储量变化 × 44/12。符号：<b>清除为正</b>，"
                 "排放为负。面积为椭球面公顷，边界像元按其位于地块内的比例计入。方法：<a href=\"methods.html\">方法文档</a>。",
        "language": "语言",
        "h_sinks": "碳汇", "h_stocks": "碳储量", "h_areas": "各碳类面积", "h_figures": "地图与图表",
        "h_transitions": "土地覆盖转移", "h_trace": "审核追溯", "h_method": "本地块采用的方法与规则",
        "h_coefficients": "所用系数", "h_gains": "各碳库的增加与损失", "h_provenance": "数据来源",
        "h_runs": "本地块的全部运行记录", "h_inputs": "输入文件",
        "period": "时段", "full_period": "全期", "area_ha": "面积（公顷）", "stock_start": "期初储量（吨碳）",
        "stock_end": "期末储量（吨碳）", "change_tc": "储量变化（吨碳）", "sink": "碳汇量（吨CO2e）",
        "interval90_co2": "90% 区间（吨CO2e）", "u90": "U90（%）", "conservative": "保守碳汇量（吨CO2e）",
        "annual": "年均碳汇量（吨CO2e/年）", "method": "方法", "year": "年份", "nodata_ha": "无数据（公顷）",
        "pool_tc": "{pool}（吨碳）", "total_tc": "合计（吨碳）", "interval95_tc": "95% 区间（吨碳）",
        "carbon_class": "碳类", "mapped_ha": "制图面积（公顷）", "adjusted_ha": "校正面积（公顷）",
        "interval95_ha": "95% 区间（公顷）", "unadjusted": "未校正", "to": "{lo} 至 {hi}",
        "pool": "碳库", "density": "碳密度（吨碳/公顷）", "sd": "标准差（吨碳/公顷）", "sd_source": "标准差来源",
        "growth_curve": "生长曲线", "source": "系数来源", "gain_tc": "{pool}增加（吨碳）",
        "loss_tc": "{pool}损失（吨碳）", "from_to": "由 \\ 至（公顷）", "site_run": "地块运行", "run": "运行",
        "status": "状态", "time": "时间", "legend": "图例", "input_file": "输入文件", "sha256": "SHA-256",
        "accuracy_sample": "精度验证样本",
        "p_site": "地块", "p_run": "账本运行", "p_computed": "计算时间", "p_coefficients": "系数集",
        "p_code": "代码版本", "p_uncertainty": "不确定性",
        "no_sinks": "账本中没有本地块的碳汇。", "no_areas": "账本中没有本地块的各碳类面积。",
        "no_transitions": "没有转移矩阵（只有一个制图年份）。",
        "transitions_of": "{y0} 年至 {y1} 年土地覆盖转移（公顷）。",
        "areas_unadjusted": "面积<b>未校正</b>：本地块没有任何年份的地图带有精度验证样本，因此面积、储量和碳汇均为制图结果，"
                            "不含制图误差（方法 §8）。",
        "areas_adjusted": "{years} 年的面积已用精度验证样本 {samples} <b>校正制图误差</b>（分层估计，Olofsson 等 2013）："
                          "上述储量和碳汇基于校正后的面积，其区间包含面积的不确定性（方法 §8）。",
        "no_figures": "无法绘制任何图（见上文）。",
        "coefficients_intro": "本地块每个碳类和碳库所用的系数，取自当前估算所依据的运行记录：系数值、标准差（或在系数表未给出时所用的默认值）、"
                              "所遵循的生长曲线及其来源。",
        "no_coefficients": "当前估算所依据的运行（{run}）没有保存本地块的系数表：无法显示所用系数。",
        "gains_intro": "增加-损失法下，各生物量碳库在每个时段的碳增加（生长）和损失（采伐、转换），单位吨碳；"
                       "土壤有机碳按储量差计算（方法 §9）。",
        "gains_stock_difference": "储量差法下，碳汇为两期地图之间的储量变化：不单独计算增加和损失（各列为零；方法 §6）。",
        "m_stock_difference": "方法：<b>储量差法</b>。每年的储量为各碳类、各碳库的面积乘以其系数（吨碳/公顷）；"
                              "一个时段的碳汇为首末两期地图之间总储量的变化乘以 44/12（方法 §2、§6）。",
        "m_gain_loss": "方法：<b>增加-损失法</b>。生物量碳库自像元进入某一碳类的年份起，沿该碳类的生长曲线增长至其储量，"
                       "像元离开该碳类时立即损失；土壤有机碳在转换期内线性变化至新碳类的储量（方法 §9）。",
        "m_initial_age": "期初已有的林分按 {age} 年林龄计。",
        "m_period": "全期自 {start} 年开始（方法 §6）。",
        "m_areas_adjusted": "面积已用各年份的精度验证样本校正制图误差；储量和碳汇基于校正后的面积（方法 §8）。",
        "m_areas_mapped": "面积为制图面积：没有精度验证样本，不含制图误差（方法 §8）。",
        "m_monte_carlo": "不确定性：对系数{areas}进行 {draws} 次蒙特卡洛抽样（种子 {seed}）；区间为 2.5–97.5 和 5–95 百分位（方法 §10）。",
        "m_mc_areas": "和校正面积",
        "m_rule_ar_tool14": "保守碳汇：按 AR-TOOL14 以 90% 区间半宽占碳汇的比例扣减（方法 §10）。",
        "m_rule_lower90": "保守碳汇：取 90% 区间的下限（方法 §10）。",
        "m_sd_default": "没有标准差的系数采用默认值：{policy}。",
        "m_sd_defaulted": "采用默认标准差的碳类和碳库：{items}。",
        "m_sd_unknown": "不确定性未知的碳类和碳库：{items}。",
        "m_flicker": "仅一年离开某碳类又返回的闪变像元不计为变化：共 {ha} 公顷（方法 §9）。",
        "m_grid": "各年份均在 {year} 年地图的网格上读取（{w} × {h} 像元）；边界像元按其位于地块内的比例计入（方法 §4、§5）。",
        "no_provenance": "当前估算所依据的运行没有保存本地块的来源记录：方法与规则见上方碳汇表。",
        "fig_land_cover": "各制图年份的土地覆盖及地块边界",
        "fig_density": "首末年份的碳储量密度及其变化",
        "fig_stock": "各碳库碳储量的逐年变化及 95% 区间",
        "lc_title": "土地覆盖及地块边界（黑线；白色 = 无数据）",
        "density_title": "{year} 年碳储量密度（吨碳/公顷）",
        "change_title": "{start}–{end} 年变化（吨碳/公顷；清除为正）",
        "chart_title": "{site}：各碳库碳储量", "chart_total": "合计",
        "chart_interval": "95% 区间（蒙特卡洛）", "chart_x": "年份", "chart_y": "吨碳",
        "latest_failed": "最近一次运行（{run}，{time}）失败：{error}",
        "no_success": "没有成功的运行：无估算结果可显示。",
        "from_last_success": "以下数字来自最近一次成功的运行（{run}）。",
        "uncertainty_part": "不确定性：{part}。",
        "year_unreadable": "{year} 年地图无法读取：{error}",
        "no_land_cover": "无法绘制土地覆盖图：本地块没有可读取的制图年份。",
        "lc_failed": "无法绘制土地覆盖图：{error}",
        "maps_not_written": "本估算的碳储量密度图未写出（发布该估算的运行未写出地图：请使用 --maps 或生成报告重新运行本地块）",
        "maps_missing": "；缺少：{names}",
        "density_failed": "无法绘制碳储量密度图：{error}",
        "chart_failed": "无法绘制碳储量图：{error}",
        "portfolio_title": "carbon-sink 项目组合", "portfolio_h": "全部地块",
        "portfolio_intro": "所有已发布估算的地块：全期碳汇量（吨CO2e，清除为正）及其 90% 区间和保守碳汇量。地图按全期碳汇量为各地块着色。",
        "portfolio_map": "按全期碳汇量（吨CO2e）着色的地块",
        "site": "地块", "name": "名称", "page": "页面", "open": "地块报告", "no_estimate": "无估算",
        "map_x": "经度", "map_y": "纬度", "map_bar": "全期碳汇量（吨CO2e）",
        "methods_title": "方法",
    },
}

#: Engine texts of coefficients_used (sd_source, growth_curve) in Chinese, by pattern.
_ZH_TEXTS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^coefficient table$"), "系数表"),
    (re.compile(r"^none \(zero stock\)$"), "无（储量为零）"),
    (re.compile(r"^unknown: no SD and no default policy$"), "未知：无标准差且无默认策略"),
    (re.compile(r"^default: 95% interval of ±90% of the mean \(the nominal error of IPCC 2006 Vol\.4 Ch\.2 Table 2\.3 "
                r"notes, applied to every pool without an SD\)$"),
     "默认值：均值 ±90% 的 95% 区间（IPCC 2006 第4卷第2章表2.3注释给出的名义误差，用于所有无标准差的碳库）"),
    (re.compile(r"^default: (.*)$"), r"默认值：\1"),
    (re.compile(r"^none: stock difference counts the stock at once$"), "无：储量差法即时计入储量"),
    (re.compile(r"^linear change over (\d+) years from the previous class's stock$"), r"自前一碳类的储量在 \1 年内线性变化"),
    (re.compile(r"^chapman_richards: (.*)$"), r"Chapman-Richards 曲线：\1"),
    (re.compile(r"^age_curve: (.*)$"), r"林龄曲线：\1"),
    (re.compile(r"^linear: ([0-9.eE+-]+) t C/ha/yr up to the stock$"), r"线性：每年 \1 吨碳/公顷，直至储量"),
    (re.compile(r"^none: the stock at once \(no growth rate\)$"), "无：即时计入储量（无生长率）"),
    # the notes of a result's uncertainty_method and the map-gap warning (carbon/rules/dating.py)
    (re.compile(r"^SD of coefficients without one: default: 95% interval of ±90% of the mean \(the nominal error of "
                r"IPCC 2006 Vol\.4 Ch\.2 Table 2\.3 notes, applied to every pool without an SD\)$"),
     "无标准差系数的处理：默认值：均值 ±90% 的 95% 区间（IPCC 2006 第4卷第2章表2.3注释给出的名义误差，用于所有无标准差的碳库）"),
    (re.compile(r"^SD of coefficients without one: default: (.*)$"), r"无标准差系数的处理：默认值：\1"),
    (re.compile(r"^SD of coefficients without one: none$"), "无标准差系数的处理：无默认值"),
    (re.compile(r"^default SD for (.*)$"), r"采用默认标准差的系数：\1"),
    (re.compile(r"^uncertainty unknown \(no SD, no default\) for (.*)$"), r"不确定性未知（无标准差、无默认值）的系数：\1"),
    (re.compile(r"^map error: areas adjusted with the maps' accuracy samples .*$"),
     "制图误差：面积已按地图精度验证样本校正（分层估计量，Olofsson 等 2013），并与系数联合抽样"),
    (re.compile(r"^site (\S+), period (\d+)-(\d+): its maps lie up to (\d+) years apart; .*$"),
     r"地块 \1，时段 \2-\3：所用地图最多相隔 \4 年；其间的变化按年份平均分摊（推定，而非观测；方法 §9）"),
]


class Messages:
    """The report's messages in one language (unknown languages are refused)."""

    def __init__(self, lang: str) -> None:
        if lang not in LANGUAGES:
            raise ValueError(f"report language must be {' or '.join(LANGUAGES)}, not {lang!r}")
        self.lang = lang

    def __call__(self, key: str, **kw: Any) -> str:
        text = MESSAGES[self.lang].get(key) or MESSAGES["en"][key]
        return text.format(**kw) if kw else text

    def pool(self, pool: str) -> str:
        return POOLS[self.lang].get(pool, pool)

    def carbon_class(self, cls: str) -> str:
        return CARBON_CLASSES[self.lang].get(cls, cls)

    def method(self, method: str) -> str:
        return METHODS[self.lang].get(method, method)

    def engine_text(self, text: str) -> str:
        """An engine's explanation (sd_source, growth_curve, the uncertainty notes, the map-gap
        warning) in this language where known."""
        if self.lang == "en":
            return text
        for pattern, repl in _ZH_TEXTS:
            if pattern.match(text):
                return pattern.sub(repl, text)
        return text

    def legend_labels(self, cw: Any) -> tuple[str, ...]:
        """The labels of a legend's codes in this language: ``label_zh`` for Chinese where the
        legend has it, else ``label``."""
        zh = getattr(cw, "labels_zh", ()) if self.lang == "zh" else ()
        if not zh:
            return tuple(cw.labels)
        return tuple(z or lbl for z, lbl in zip(zh, cw.labels, strict=True))

    @property
    def html_lang(self) -> str:
        return "zh-Hans" if self.lang == "zh" else "en"
