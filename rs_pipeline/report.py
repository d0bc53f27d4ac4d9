"""Pictures of a home's history (matplotlib), shared by the UI's asset metadata, MLflow and
``notebooks/rounds.ipynb``.

Figures are built with matplotlib's object API (no pyplot, no global backend), so the same
functions render to PNG bytes for the UI and display inline in a notebook.
"""

from __future__ import annotations

import io

import pandas as pd
from matplotlib.figure import Figure


def _figure(width: float, height: float, cols: int = 1):
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(1, cols)
    return fig, axes


def accuracy_figure(history: pd.DataFrame) -> Figure:
    """Candidate accuracy per round (and the champion's before it), and mean reward."""
    fig, ax = _figure(11, 3.8, cols=2)
    x = list(range(len(history)))
    for col in ("greedy_acc", "sample_acc", "pass_at_n", "champion_greedy_acc"):
        ax[0].plot(x, history[col], marker="o", label=col)
    ax[0].set_xticks(x, history["round"])
    ax[0].set_ylim(0, 1.02)
    ax[0].set_title("held-out accuracy per round (candidate; champion before it)")
    ax[0].legend(fontsize=8)
    ax[1].plot(x, history["mean_reward"], marker="o", color="tab:purple")
    ax[1].set_xticks(x, history["round"])
    ax[1].set_title("mean preference score of eval samples")
    fig.tight_layout()
    return fig


def reward_figure(rewards_by_round: dict[str, list[float]]) -> Figure:
    fig, ax = _figure(8, 3.8)
    for key, rewards in rewards_by_round.items():
        ax.hist(rewards, bins=40, histtype="step", linewidth=1.5, label=key, density=True)
    ax.set_title("reward distribution of each round's generations")
    ax.set_xlabel("reward")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def kept_figure(history: pd.DataFrame) -> Figure:
    fig, ax = _figure(8, 3.2)
    colors = ["tab:green" if p else "tab:red" for p in history["promoted"]]
    bars = ax.bar(history["round"], history["kept"], color=colors)
    if "gate_summary" in history:  # what the gate compared, over each round's bar
        ax.bar_label(bars, [s or "" for s in history["gate_summary"]], fontsize=7)
    ax.set_title("kept-set size per round (green: promoted, red: refused; label: the gate's "
                 "judge, candidate/champion)")
    fig.tight_layout()
    return fig


def lineage_figure(base_id: str, history: pd.DataFrame) -> Figure:
    """Checkpoints left to right; an arrow from each to its parent; refused ones below."""
    nodes = [("base", base_id, True)] + list(zip(history["round"], history["policy_id"],
                                                 history["promoted"]))
    parents = dict(zip(history["policy_id"], history["parent_policy_id"]))
    pos = {pid: i for i, (_, pid, _) in enumerate(nodes)}
    fig, ax = _figure(2.2 * len(nodes) + 1, 2.6)
    for i, (label, pid, ok) in enumerate(nodes):
        y = 1.0 if ok else 0.0
        ax.text(i, y, f"{label}\n{pid}", ha="center", va="center", fontsize=8,
                bbox={"boxstyle": "round", "fc": "#d9f2d9" if ok else "#f7d4d4"})
        if parents.get(pid) in pos:
            j = pos[parents[pid]]
            ax.annotate("", xy=(i - 0.3, y), xytext=(j + 0.3, 1.0 if nodes[j][2] else 0.0),
                        arrowprops={"arrowstyle": "->", "color": "gray"})
    ax.set_xlim(-0.7, len(nodes) - 0.3)
    ax.set_ylim(-0.6, 1.6)
    ax.axis("off")
    ax.set_title("lineage: each checkpoint's parent (top: champions, bottom: refused)")
    fig.tight_layout()
    return fig


def continuous_figure(curve: pd.DataFrame) -> Figure:
    """Champion greedy accuracy against cumulative generated tokens, one step line per ``arm``
    (``benchmarks/continuous.py``: small continuous rounds against the default rounds)."""
    fig, ax = _figure(8, 3.8)
    for arm, rows in curve.groupby("arm", sort=False):
        ax.step(rows["tokens"], rows["champion_greedy_acc"], where="post", marker="o",
                label=f"{arm} ({len(rows) - 1} rounds)")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("generated tokens (cumulative)")
    ax.set_ylabel("champion greedy accuracy")
    ax.set_title("learning continuously: small rounds against the default rounds")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def png_bytes(fig: Figure, dpi: int = 90) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
