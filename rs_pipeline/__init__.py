"""rs_pipeline: iterative rejection-sampling fine-tuning (best-of-N -> SFT) as a Dagster asset graph.

The core modules (everything outside ``rs_pipeline.defs`` and ``rs_pipeline.cli``) are plain
Python: they never import Dagster or MLflow.
"""

__version__ = "0.1.0"
