"""On-policy distillation from a teacher behind `distill serve` (TRL's server-teacher path, over HTTP)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from core.errors import DistillError
from serve.server import start_server
from train.onpolicy import OnPolicySettings, main, train_onpolicy

SETTINGS = OnPolicySettings(max_steps=3, batch_size=4, learning_rate=1e-2, beta=0.0, max_new_tokens=12,
                            max_length=128)


@pytest.fixture(scope="module")
def served_teacher(tmp_path_factory):
    """tiny-random with re-drawn weights (same vocabulary, other model), served on loopback."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from clients.tiny import build_tiny_model

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILL_CACHE", str(tmp_path_factory.mktemp("cache")))
        out = build_tiny_model(tmp_path_factory.mktemp("teacher") / "tiny-teacher", seed=1234)
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(out)
        with start_server(str(out)) as handle:
            yield handle, model.eval(), tok


def _prompts(path: Path, n: int = 8) -> Path:
    path.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"Question: Is {i} even?"}]}) + "\n"
                            for i in range(n)))
    return path


def test_teacher_client_gets_the_served_models_logprobs(served_teacher):
    """TRL's own request and parsing (VLLMClient.get_sequence_logprobs) against our server."""
    import torch

    from train.server_teacher import base_url, teacher_client_class

    handle, model, tok = served_teacher
    client = teacher_client_class()(base_url(handle.url))
    seq = tok("What is the capital of France? The capital is Paris.")["input_ids"]
    got = client.get_sequence_logprobs([seq, seq[:6]], [3, 2], top_logprobs=4, temperature=1.0)
    with torch.no_grad():
        local = torch.log_softmax(model(torch.tensor([seq])).logits[0], dim=-1)
    # Completion tokens seq[3:] are scored by the logits of positions 2..n-2.
    top = local[2:-1].topk(4)
    assert torch.allclose(torch.tensor(got["logprobs"][0]), top.values, atol=1e-4)
    assert got["logprob_token_ids"][0] == top.indices.tolist()
    actual = local[2:-1].gather(1, torch.tensor(seq[3:])[:, None]).squeeze(1)
    assert torch.allclose(torch.tensor(got["actual_logprobs"][0]).squeeze(1), actual, atol=1e-4)
    assert len(got["logprobs"][1]) == 4  # the second, shorter sequence: 6 tokens, 2 of prompt


def test_onpolicy_trains_against_the_http_teacher(served_teacher, tmp_path):
    handle, _, _ = served_teacher
    data = _prompts(tmp_path / "prompts.jsonl")
    out = train_onpolicy(data, "tiny-random", None, tmp_path / "op", SETTINGS, teacher_url=handle.url,
                         teacher_top_k=5)
    assert out["steps"] == 3 and len(out["losses"]) == 3 and out["teacher"].endswith(handle.url)
    assert all(math.isfinite(x) for x in out["losses"]) and out["losses"][0] > 0, out["losses"]
    assert (Path(out["model_dir"]) / "model.safetensors").exists()
    assert handle.stats["batched_rows"] >= 3 * 4  # every step's batch was scored over HTTP
    # beta > 0 goes through TRL's top-1 JSD, with the off-policy share mixed in.
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Is {i} even?"},
                                                    {"role": "assistant", "content": "Yes" if i % 2 else "No"}]})
                           + "\n" for i in range(4)))
    mixed = train_onpolicy(sft, "tiny-random", None, tmp_path / "mix",
                           OnPolicySettings(**{**SETTINGS.__dict__, "beta": 0.5, "lmbda": 0.5, "max_steps": 2}),
                           teacher_url=handle.url + "/")
    assert mixed["steps"] == 2 and all(math.isfinite(x) for x in mixed["losses"])


def test_server_teacher_mistakes_are_one_line_errors(tmp_path):
    data = _prompts(tmp_path / "prompts.jsonl", 2)
    with pytest.raises(DistillError, match="http://"):
        train_onpolicy(data, "tiny-random", None, tmp_path / "o", SETTINGS, teacher_url="127.0.0.1:8000/v1")
    with pytest.raises(DistillError, match="distill serve"):
        train_onpolicy(data, "tiny-random", None, tmp_path / "o", SETTINGS, teacher_url="http://127.0.0.1:1/v1")
    with pytest.raises(DistillError, match="--beta 0"):
        train_onpolicy(data, "tiny-random", None, tmp_path / "o", OnPolicySettings(beta=0.5),
                       teacher_url="http://127.0.0.1:1/v1", teacher_top_k=5)
    with pytest.raises(DistillError, match="drop --teacher"):
        train_onpolicy(data, "tiny-random", "tiny-random", tmp_path / "o", SETTINGS,
                       teacher_url="http://127.0.0.1:1/v1")


def test_help_shows_the_url_example(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--teacher-url http://127.0.0.1:8000/v1" in capsys.readouterr().out
