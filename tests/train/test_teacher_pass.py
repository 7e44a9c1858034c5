"""Teacher pass of offline logit KD: top-k / sampled teacher targets per sample, resumable, refuses mismatches."""
import json
import shutil

import numpy as np
import pytest
import torch

from core.errors import DistillError
from clients.models import model_path
from train.teacher_pass import encode, load_targets, teacher_pass

MESSAGES = [[{"role": "user", "content": f"What is {i} plus {i}?"},
             {"role": "assistant", "content": f"Reasoning: add them.\nAnswer: {2 * i}"}] for i in range(5)]


@pytest.fixture
def export(tmp_path):
    path = tmp_path / "sft.jsonl"
    path.write_text("".join(json.dumps({"messages": m, "sample_id": f"s{i}", "prompt_id": f"p{i}"}) + "\n"
                            for i, m in enumerate(MESSAGES)))
    return path


def test_topk_targets_match_the_teacher_and_rerun_is_free(store, export):
    out = teacher_pass(store, export, "tiny-random", "tiny-random", "r1", k=4, batch_size=2)
    assert out["scored"] == 5 and out["bytes_per_token"] == 32.0  # 4 x (int32 id + float32 log-prob)
    assert teacher_pass(store, export, "tiny-random", "tiny-random", "r2", k=4)["scored"] == 0

    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_path("tiny-random"))
    model = AutoModelForCausalLM.from_pretrained(model_path("tiny-random")).eval()
    rows = store.teacher_logprobs(["s0", "s3"], "tiny-random", "topk", 4)
    for sid, messages in (("s0", MESSAGES[0]), ("s3", MESSAGES[3])):
        ids, n_prompt = encode(tok, messages, 512)
        ids_k, logprobs = load_targets(rows[sid])
        assert len(ids_k) == len(ids) - n_prompt == rows[sid]["positions"] > 0
        with torch.no_grad():
            ref = torch.log_softmax(model(torch.tensor([ids])).logits[0, n_prompt - 1:len(ids) - 1].float(), -1)
        top = ref.topk(4, dim=-1)
        assert np.array_equal(ids_k, top.indices.numpy()) and np.allclose(logprobs, top.values.numpy(), atol=1e-5)


def test_full_vocabulary_k_sums_to_one_and_sampled_weights_sum_to_one(store, export):
    from transformers import AutoTokenizer
    vocab = len(AutoTokenizer.from_pretrained(model_path("tiny-random")))
    teacher_pass(store, export, "tiny-random", "tiny-random", "r", k=vocab)
    _, logprobs = load_targets(store.teacher_logprobs(["s1"], "tiny-random", "topk", vocab)["s1"])
    assert np.allclose(np.exp(logprobs).sum(axis=1), 1.0, atol=1e-4)
    teacher_pass(store, export, "tiny-random", "tiny-random", "r", k=16, mode="sampled")
    ids, weights = load_targets(store.teacher_logprobs(["s1"], "tiny-random", "sampled", 16)["s1"])
    assert np.allclose(weights.sum(axis=1), 1.0) and ((ids == -1) == (weights == 0)).all()


def test_different_vocabularies_are_refused(store, export, tmp_path):
    from transformers import AutoTokenizer
    other = tmp_path / "other-teacher"
    shutil.copytree(model_path("tiny-random"), other)
    tok = AutoTokenizer.from_pretrained(other)
    tok.add_tokens(["<|brand-new-token|>"])
    tok.save_pretrained(other)
    with pytest.raises(DistillError, match="different vocabularies"):
        teacher_pass(store, export, str(other), "tiny-random", "r")
    assert store.count("teacher_logprobs") == 0


def test_export_without_lineage_is_a_clear_error(store, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": MESSAGES[0]}) + "\n")
    with pytest.raises(DistillError, match="sample_id"):
        teacher_pass(store, bad, "tiny-random", "tiny-random", "r")
