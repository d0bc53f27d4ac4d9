"""The loop's steps, one function each: (run context, inputs) -> (output, metrics).

Each Dagster asset calls exactly one of these and only records what it returns;
``benchmarks/orchestration.py`` calls the same functions directly. Nothing here imports Dagster
or MLflow. Metrics are named as they appear in MLflow (``gen/...``, ``pref/...``).
"""
