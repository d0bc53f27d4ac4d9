"""Jobs: the bootstrap (unpartitioned assets) and one round (every round asset, one partition)."""

import dagster as dg

from rs_pipeline.defs.partitions import ROUNDS

bootstrap_job = dg.define_asset_job("bootstrap", selection=dg.AssetSelection.groups("bootstrap"))
round_job = dg.define_asset_job("round", selection=dg.AssetSelection.groups("round"),
                                partitions_def=ROUNDS)
