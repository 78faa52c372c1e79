"""The report: draws what was published (the ledger's tables, the rasters, the density maps
a run wrote); it never computes a stock."""
