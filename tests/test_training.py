import shutil
import tempfile
from pathlib import Path

import torch

from rs_pipeline.modeling import load_policy
from rs_pipeline.tasks import get_task
from rs_pipeline.training import IGNORE, encode_completions, train_on_completions


def _completion_loss(model, tok, prompts, completions):
    rows = encode_completions(tok, prompts, completions)
    total, count = 0.0, 0
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r["input_ids"]])
            out = model(input_ids=ids, labels=torch.tensor([r["labels"]]))
            n = sum(1 for x in r["labels"][1:] if x != IGNORE)
            total, count = total + out.loss.item() * n, count + n
    return total / count


def test_labels_mask_the_prompt_and_end_with_eos(tiny_policy):
    _, tok = load_policy(tiny_policy)
    rows = encode_completions(tok, ["012=", "2="], ["210", "2"])
    p = tok("012=", add_special_tokens=False)["input_ids"]
    c = tok("210", add_special_tokens=False)["input_ids"]
    assert rows[0]["input_ids"] == p + c + [tok.eos_token_id]
    assert rows[0]["labels"] == [IGNORE] * len(p) + c + [tok.eos_token_id]
    assert rows[1]["labels"][:2] == [IGNORE, IGNORE] and rows[1]["labels"][-1] == tok.eos_token_id


def test_sft_learns_the_completions_only_and_leaves_no_temp_folder(tiny_policy):
    model, tok = load_policy(tiny_policy)
    task = get_task("rev8")
    prompts = task.prompts()[4000:4256]
    right = [task.answer(p) for p in prompts]
    before = _completion_loss(model, tok, prompts, right)
    tmp = Path(tempfile.gettempdir())
    existing = set(tmp.glob("rs-trainer-*"))
    metrics = train_on_completions(model, tok, prompts, right, lr=2e-3, batch_size=32, seed=0,
                                   epochs=2)
    assert metrics["steps"] == 16 and set(tmp.glob("rs-trainer-*")) == existing
    after = _completion_loss(model, tok, prompts, right)
    assert after < before * 0.7
    # the prompt carries no loss: changing a masked prompt token's label changes nothing
    r = encode_completions(tok, prompts[:1], right[:1])[0]
    ids, labels = torch.tensor([r["input_ids"]]), torch.tensor([r["labels"]])
    with torch.no_grad():
        base = model(input_ids=ids, labels=labels).loss
        labels[0, 1] = IGNORE
        assert torch.equal(model(input_ids=ids, labels=labels).loss, base)


def test_a_half_written_trainer_checkpoint_is_skipped(tmp_path):
    """kill -9 during a Trainer save left checkpoint-10 without its weights, and the resumed
    step failed with "Can't find a valid checkpoint" (found by tools/kill_trials.py)."""
    from rs_pipeline.training import last_complete_checkpoint

    done, partial = tmp_path / "checkpoint-5", tmp_path / "checkpoint-10"
    done.mkdir()
    (done / "trainer_state.json").write_text("{}")
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half")
    assert last_complete_checkpoint(str(tmp_path)) == str(done)
    assert not partial.exists()
    shutil.rmtree(done)
    assert last_complete_checkpoint(str(tmp_path)) is None
