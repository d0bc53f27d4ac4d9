"""Writes notebooks/rounds.ipynb (kept as code here so its cells stay reviewable)."""

from pathlib import Path

import nbformat as nbf

CELLS = [
    ("md", """# Rounds of a rejection-sampling history

Opens one Dagster home's history (`RS_HOME`, default `../dagster_home`): accuracy and reward per
round, reward distributions, kept-set sizes, and the lineage chain of checkpoints. The figures
show inline and are also saved to `RS_NOTEBOOK_OUT` (default `<home>/notebook/`)."""),
    ("code", """%matplotlib inline
import json
import os
from pathlib import Path

from IPython.display import display

HOME = Path(os.environ.get("RS_HOME", "../dagster_home")).resolve()
OUT = Path(os.environ.get("RS_NOTEBOOK_OUT", HOME / "notebook"))
OUT.mkdir(parents=True, exist_ok=True)

from rs_pipeline import report
from rs_pipeline.context import load_context
from rs_pipeline.history import history_frame, read_history

store = load_context(HOME).store
history = history_frame(read_history(store))
print(f"{HOME}: {len(history)} evaluated rounds")"""),
    ("code", """history"""),
    ("code", """fig = report.accuracy_figure(history)
fig.savefig(OUT / "accuracy_per_round.png", dpi=110)
display(fig)"""),
    ("code", """rewards = {k: store.read_table("scores", k).column("reward").to_pylist()
           for k in history["round"]}
fig = report.reward_figure(rewards)
fig.savefig(OUT / "reward_distributions.png", dpi=110)
display(fig)"""),
    ("code", """fig = report.kept_figure(history)
fig.savefig(OUT / "kept_per_round.png", dpi=110)
display(fig)"""),
    ("code", """fig = report.lineage_figure(store.read_record("base_policy").id, history)
fig.savefig(OUT / "lineage_chain.png", dpi=110)
display(fig)"""),
    ("md", """Learning continuously: the champion's greedy accuracy against the tokens its rounds
generated, small rounds chained by continuous mode against the default rounds
(`benchmarks/continuous.py` writes the curve to `<home>/benchmarks/continuous.csv`, or set
`RS_CONTINUOUS_CURVE`; without either, the curve measured for the README,
`benchmarks/results/continuous_rev8.csv`)."""),
    ("code", """curve_path = Path(os.environ.get("RS_CONTINUOUS_CURVE",
                                HOME / "benchmarks" / "continuous.csv"))
if not curve_path.is_file():
    curve_path = Path("../benchmarks/results/continuous_rev8.csv")
if curve_path.is_file():
    import pandas as pd

    fig = report.continuous_figure(pd.read_csv(curve_path))
    fig.savefig(OUT / "continuous_curve.png", dpi=110)
    display(fig)
else:
    print(f"no curve at {curve_path}: run benchmarks/continuous.py")"""),
    ("code", """summary = {"home": str(HOME), "rounds": list(history["round"]),
           "figures": sorted(p.name for p in OUT.glob("*.png"))}
(OUT / "summary.json").write_text(json.dumps(summary, indent=2))
summary"""),
]

if __name__ == "__main__":
    nb = nbf.v4.new_notebook()
    nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
                for kind, src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    out = Path(__file__).resolve().parent.parent / "notebooks" / "rounds.ipynb"
    nbf.write(nb, out)
    print(out)
