"""Federated statistics of the prepared sites with NVFlare's own FedStats (``fedgin stats``).

``SiteStatistics`` is the site's NVFlare ``Statistics`` generator over ``fedgin.data.site_stats`` (intensities
inside the body before and after normalisation, organ volume fractions); ``stats_recipe`` is NVFlare's
``FedStatsRecipe`` with it at every site and NVFlare's privacy cleansers on every result (a minimum count per
feature, noise on the minima and maxima that fix the histogram range, a bound on bins per count).
``StatisticsController`` asks every site for counts, sums, means, standard deviations and histograms, and writes
them, per site and global, as JSON in the server's run folder (``fedgin.reporting.stats_figure`` draws them).
"""

from __future__ import annotations

from typing import Any

from nvflare.apis.fl_context import FLContext
from nvflare.app_common.abstract.statistics_spec import Bin, DataType, Feature, Histogram, HistogramType, Statistics

from fedgin.common.job_args import keep_job_args

__all__ = ["SiteStatistics", "stats_recipe", "STATS_FILE", "statistic_configs"]

STATS_FILE = "statistics/site_statistics.json"


def statistic_configs(bins: int) -> dict[str, Any]:
    """What the server asks: moments of every feature, histograms of the intensities (``bins`` bins) and of the
    organs' 0/1 indicators (2 bins: NVFlare asks a histogram of every feature)."""
    return {"count": {}, "mean": {}, "sum": {}, "stddev": {},
            "histogram": {"raw": {"bins": int(bins)}, "normalised": {"bins": int(bins)}, "*": {"bins": 2}}}


class SiteStatistics(Statistics):
    """The site's statistics generator.

    Args:
        data_root, datalist: where the site's ``datalist.json`` is (as ``FedGINExecutor``; the site's own
            ``local/fedgin_site.json`` first).
        splits: the splits whose cases are counted.
        raw: include the source scans' intensities (``raw``).
    """

    def __init__(self, data_root: str = "", datalist: str = "{data_root}/{site}/datalist.json",
                 splits: list[str] | None = None, raw: bool = True) -> None:
        super().__init__()
        self.data_root = data_root
        self.datalist = datalist
        self.splits = list(splits or ["training", "validation"])
        self.raw = bool(raw)
        self.stats = None
        keep_job_args(self, data_root=data_root, datalist=datalist, splits=self.splits, raw=self.raw)

    def initialize(self, fl_ctx: FLContext) -> None:
        from fedgin.data.site_stats import site_stats
        from fedgin.flare.executor import site_datalist

        path, _ = site_datalist(fl_ctx, self.data_root, self.datalist)
        self.stats = site_stats(path, tuple(self.splits), raw=self.raw)
        counts = {f: m.count for (d, f), m in self.stats.moments.items() if d == "intensity"}
        self.log_info(fl_ctx, f"statistics of {path}: {len(self.stats.datalist.get('training', []))} training "
                              f"cases; body voxels {counts}")

    def _m(self, dataset: str, feature: str):
        return self.stats.moments[(dataset, feature)]

    def features(self) -> dict[str, list[Feature]]:
        return {d: [Feature(f, DataType.FLOAT) for f in names] for d, names in self.stats.features().items()}

    def count(self, dataset_name: str, feature_name: str) -> int:
        return self._m(dataset_name, feature_name).count

    def sum(self, dataset_name: str, feature_name: str) -> float:
        return self._m(dataset_name, feature_name).total

    def mean(self, dataset_name: str, feature_name: str) -> float:
        return self._m(dataset_name, feature_name).mean

    def stddev(self, dataset_name: str, feature_name: str) -> float:
        return self._m(dataset_name, feature_name).stddev

    def variance_with_mean(self, dataset_name: str, feature_name: str, global_mean: float,
                           global_count: float) -> float:
        return self._m(dataset_name, feature_name).variance_about(global_mean, global_count)

    def max_value(self, dataset_name: str, feature_name: str) -> float:
        return self._m(dataset_name, feature_name).high

    def min_value(self, dataset_name: str, feature_name: str) -> float:
        return self._m(dataset_name, feature_name).low

    def failure_count(self, dataset_name: str, feature_name: str) -> int:
        return 0

    def histogram(self, dataset_name: str, feature_name: str, num_of_bins: int, global_min_value: float,
                  global_max_value: float) -> Histogram:
        counts, edges = self.stats.histogram(dataset_name, feature_name, num_of_bins, global_min_value,
                                             global_max_value)
        bins = [Bin(float(lo), float(hi), float(c)) for lo, hi, c in zip(edges[:-1], edges[1:], counts)]
        return Histogram(HistogramType.STANDARD, bins)


def stats_recipe(sites: list[str], data_root: str = "", bins: int = 60, min_count: int = 10,
                 raw: bool = True, splits: list[str] | None = None, name: str = "fedgin-stats"):
    """NVFlare's ``FedStatsRecipe`` with ``SiteStatistics`` at every site (NVFlare's default privacy cleansers:
    ``min_count`` records per feature, 10-30 % noise on minima and maxima, at most 10 % as many bins as records)."""
    from nvflare.recipe.fedstats import FedStatsRecipe

    return FedStatsRecipe(name=name, stats_output_path=STATS_FILE, sites=list(sites),
                          statistic_configs=statistic_configs(bins),
                          stats_generator=SiteStatistics(data_root=data_root, splits=splits, raw=raw),
                          min_count=min_count)
