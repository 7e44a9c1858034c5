"""`distill serve` answers vLLM's scoring request (`prompt_logprobs`) as TRL's teacher client sends it."""
from __future__ import annotations

import httpx
import pytest
import torch

from serve.server import start_server


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILL_CACHE", str(tmp_path_factory.mktemp("cache")))
        with start_server("tiny-random") as handle:
            from clients.models import load_model

            model, tok = load_model("tiny-random")
            yield handle, model, tok


def _local_logprobs(model, ids: list[int], temperature: float) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].float() / temperature, dim=-1)


def test_prompt_logprobs_match_the_local_model(tiny):
    handle, model, tok = tiny
    seqs = [tok("What is the capital of France? The capital")["input_ids"], tok("2 + 3 = 5.")["input_ids"]]
    # Exactly VLLMClient.get_sequence_logprobs's body (TRL's ServerDistillationTrainer).
    body = {"model": "tiny-random", "prompt": seqs, "max_tokens": 1, "temperature": 0.7, "prompt_logprobs": 3}
    r = httpx.post(handle.url + "/completions", json=body, timeout=60)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "text_completion" and len(out["choices"]) == 2
    assert out["usage"]["prompt_tokens"] == sum(map(len, seqs)) and out["usage"]["completion_tokens"] == 2
    for seq, choice in zip(seqs, out["choices"]):
        plp = choice["prompt_logprobs"]
        assert len(plp) == len(seq) and plp[0] is None  # vLLM: the first token has no context
        local = _local_logprobs(model, seq, 0.7)
        for pos in range(1, len(seq)):
            entries = plp[pos]
            # The top 3 by rank, plus the actual token (with its true rank) when it is not among them.
            top = local[pos - 1].topk(3)
            by_rank = sorted(entries.items(), key=lambda kv: kv[1]["rank"])
            assert [int(t) for t, _ in by_rank[:3]] == top.indices.tolist()
            assert str(seq[pos]) in entries and len(entries) in (3, 4)
            actual = entries[str(seq[pos])]
            assert actual["rank"] == int((local[pos - 1] > local[pos - 1, seq[pos]]).sum()) + 1
            for token, entry in entries.items():
                assert entry["logprob"] == pytest.approx(local[pos - 1, int(token)].item(), abs=1e-4)
                assert entry["decoded_token"] == tok.decode([int(token)])


def test_echo_and_logprobs_without_generation(tiny):
    handle, model, tok = tiny
    text = "The quick brown fox"
    ids = tok(text)["input_ids"]
    body = {"model": "tiny-random", "prompt": text, "max_tokens": 0, "echo": True, "logprobs": 2, "temperature": 0}
    choice = httpx.post(handle.url + "/completions", json=body, timeout=60).json()["choices"][0]
    assert choice["text"] == text and choice["prompt_logprobs"] is None
    lp = choice["logprobs"]
    assert lp["token_logprobs"][0] is None and len(lp["tokens"]) == len(ids)
    local = _local_logprobs(model, ids, 1.0)  # temperature 0 scores the raw logits
    assert lp["token_logprobs"][1:] == pytest.approx([local[p - 1, ids[p]].item() for p in range(1, len(ids))],
                                                      abs=1e-4)


def test_bad_scoring_requests_are_400(tiny):
    handle, _, _ = tiny

    def post(**extra):
        return httpx.post(handle.url + "/completions", json={"model": "tiny-random", **extra}, timeout=60)

    assert post(prompt=[[1, 2, 3]], prompt_logprobs=2, max_tokens=5).json()["error"]["param"] == "max_tokens"
    assert post(prompt=[[1, 10**6]], prompt_logprobs=2).json()["error"]["param"] == "prompt"
    assert post(prompt=[[1, 2]], prompt_logprobs=-3).json()["error"]["param"] == "prompt_logprobs"
    with start_server("echo") as echo:
        r = httpx.post(echo.url + "/completions", json={"model": "echo", "prompt": [[1, 2]], "prompt_logprobs": 1})
        assert r.status_code == 400 and "--model" in r.json()["error"]["message"]
