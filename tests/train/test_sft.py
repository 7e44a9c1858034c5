import json

import pytest

from core.errors import DistillError
from train.sft import SFTSettings, train_sft


@pytest.fixture
def tiny_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path_factory.mktemp("cache")))


def _write_messages(path, n=16):
    with path.open("w") as f:
        for i in range(n):
            q = f"Is {i} even?"
            a = "Yes" if i % 2 == 0 else "No"
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"Question: {q}\nOptions: Yes, No"},
                {"role": "assistant", "content": f"Reasoning: {i} divided by two leaves {i % 2}.\nAnswer: {a}"}]}) + "\n")


def test_sft_on_store_export_lowers_loss_and_is_cached(tmp_path, tiny_cache):
    data = tmp_path / "sft.jsonl"
    _write_messages(data)
    settings = SFTSettings(max_steps=12, batch_size=4, learning_rate=3e-3, max_length=128)
    out = train_sft(data, "tiny-random", tmp_path / "student", settings)
    assert out["steps"] == 12 and not out["cached"]
    first, last = sum(out["losses"][:3]) / 3, sum(out["losses"][-3:]) / 3
    assert last < first, out["losses"]
    again = train_sft(data, "tiny-random", tmp_path / "student", settings)
    assert again["cached"] and again["model_dir"] == out["model_dir"]


def test_sft_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(DistillError, match="not found"):
        train_sft(tmp_path / "nope.jsonl", "tiny-random", tmp_path / "out")


def test_sft_on_plain_prompt_completion_rows_learns_the_completion(tmp_path, tiny_cache):
    # The demo's format: the evaluator's text prompt, the answer as the completion, lineage columns beside.
    data = tmp_path / "pc.jsonl"
    with data.open("w") as f:
        for i in range(16):
            f.write(json.dumps({"prompt": f"Is {i} even?", "completion": " yes" if i % 2 == 0 else " no",
                                "prompt_id": str(i), "teacher": "t"}) + "\n")
    settings = SFTSettings(max_steps=12, batch_size=4, learning_rate=3e-3, max_length=64)
    out = train_sft(data, "tiny-random", tmp_path / "student", settings)
    assert out["rows"] == 16 and out["steps"] == 12
    assert sum(out["losses"][-3:]) < sum(out["losses"][:3]), out["losses"]


def test_sft_data_without_a_known_format_is_a_clear_error(tmp_path):
    data = tmp_path / "odd.jsonl"
    data.write_text(json.dumps({"text": "hello"}) + "\n")
    with pytest.raises(DistillError, match="neither a 'messages' column nor 'prompt' and 'completion'"):
        train_sft(data, "tiny-random", tmp_path / "out")
