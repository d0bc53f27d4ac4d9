"""A home's history as a table and pictures (matplotlib): shared by the UI's asset metadata
and ``notebooks/rounds.ipynb``."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from rs_pipeline.storage import AssetStore  # noqa: E402


def history_row(store: AssetStore, ev: dict, promoted: bool) -> dict:
    """One round's row from its ``round_eval`` record."""
    key = ev["round"]
    cand, champ = ev["candidate"]["eval"], ev["champion"]["eval"]
    return {
        "round": key, "policy_id": ev["policy_id"], "parent_policy_id": ev["champion_policy_id"],
        "greedy_acc": cand["greedy_acc"], "sample_acc": cand["sample_acc"],
        "pass_at_n": cand["pass_at_n"], "mean_reward": cand["mean_reward"],
        "champion_greedy_acc": champ["greedy_acc"],
        "kept": store.num_rows("sft_dataset", key)
        if store.exists("sft_dataset", key) else None,
        "promoted": promoted, "reason": ev["decision"]["reason"],
    }


def round_history(store: AssetStore, current: dict | None = None) -> pd.DataFrame:
    """One row per evaluated round: candidate metrics, kept rows, promotion and its reason.

    ``current``: a ``round_eval`` record not yet stored (its gate decision stands for promotion).
    """
    rows = [history_row(store, store.read_json("round_eval", k), store.exists("promotion", k, "json"))
            for k in store.partitions("round_eval", "json")
            if current is None or k != current["round"]]
    if current is not None:
        rows.append(history_row(store, current, current["decision"]["promoted"]))
    return pd.DataFrame(rows).sort_values("round").reset_index(drop=True)


def accuracy_figure(history: pd.DataFrame):
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
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


def reward_figure(rewards_by_round: dict[str, list[float]]):
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for key, rewards in rewards_by_round.items():
        ax.hist(rewards, bins=40, histtype="step", linewidth=1.5, label=key, density=True)
    ax.set_title("reward distribution of each round's generations")
    ax.set_xlabel("reward")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def kept_figure(history: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(8, 3.2))
    colors = ["tab:green" if p else "tab:red" for p in history["promoted"]]
    ax.bar(history["round"], history["kept"], color=colors)
    ax.set_title("kept-set size per round (green: promoted, red: refused)")
    fig.tight_layout()
    return fig


def lineage_figure(base_id: str, history: pd.DataFrame):
    """Checkpoints left to right; an arrow from each to its parent; refused ones below."""
    nodes = [("base", base_id, True)] + list(zip(history["round"], history["policy_id"],
                                                 history["promoted"]))
    parents = dict(zip(history["policy_id"], history["parent_policy_id"]))
    pos = {pid: i for i, (_, pid, _) in enumerate(nodes)}
    fig, ax = plt.subplots(figsize=(2.2 * len(nodes) + 1, 2.6))
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


def png_bytes(fig, dpi: int = 90) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
