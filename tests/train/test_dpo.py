import json
import shutil
from pathlib import Path

import pytest

from core.errors import DistillError
from train.dpo import DPOSettings, main, train_dpo


@pytest.fixture
def tiny_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path_factory.mktemp("cache")))


def _pair(i: int) -> dict:
    """One row shaped like `curation.export` kind 'dpo': TRL columns plus lineage columns."""
    gold, wrong = ("Yes", "No") if i % 2 == 0 else ("No", "Yes")
    return {
        "prompt": [{"role": "user", "content": f"Question: Is {i} even?\nOptions: Yes, No"}],
        "chosen": [{"role": "assistant", "content": f"Reasoning: {i} divided by two leaves {i % 2}.\nAnswer: {gold}"}],
        "rejected": [{"role": "assistant", "content": f"Answer: {wrong}"}],
        "margin": 1.0, "strategy": "verified", "prompt_id": f"p{i}", "pair_id": f"pair{i}",
        "chosen_sample_id": f"s{i}a", "rejected_sample_id": f"s{i}b", "teacher": "gemma-3-270m",
        "export_id": None if i % 3 else "e1",  # mixed null/str lineage must not reach TRL
    }


def _write_pairs(path: Path, n: int = 8) -> Path:
    path.write_text("".join(json.dumps(_pair(i)) + "\n" for i in range(n)))
    return path


SETTINGS = DPOSettings(max_steps=8, batch_size=4, learning_rate=1e-3, beta=0.1, max_length=128)


def _mean(xs):
    return sum(xs) / len(xs)


def test_dpo_prefers_chosen_and_is_cached_and_resumes(tmp_path, tiny_cache):
    data = _write_pairs(tmp_path / "pairs.jsonl")
    out = train_dpo(data, "tiny-random", tmp_path / "dpo", SETTINGS)
    assert out["steps"] == 8 and not out["cached"] and out["rows"] == 8 == out["rows_used"]
    losses, margins, accs = out["losses"], out["reward_margins"], out["reward_accuracies"]
    assert len(losses) == len(margins) == len(accs) == 8
    # Step 1: policy == reference, so the sigmoid loss is log 2 and the margin is 0.
    assert losses[0] == pytest.approx(0.6931, abs=1e-3) and margins[0] == pytest.approx(0.0, abs=1e-4)
    assert _mean(losses[-3:]) < _mean(losses[:3]) - 0.05, losses
    assert _mean(margins[-3:]) > 0.1, margins
    assert _mean(accs[-3:]) >= 0.75, accs
    model_dir = Path(out["model_dir"])
    assert (model_dir / "config.json").exists() and (model_dir / "tokenizer_config.json").exists()
    assert json.loads((model_dir / "train_summary.json").read_text())["steps"] == 8

    again = train_dpo(data, "tiny-random", tmp_path / "dpo", SETTINGS)
    assert again["cached"] and again["model_dir"] == out["model_dir"] and again["losses"] == losses

    # A run killed after its last checkpoint but before the final rename resumes instead of restarting.
    shutil.rmtree(model_dir)
    resumed = train_dpo(data, "tiny-random", tmp_path / "dpo", SETTINGS)
    assert not resumed["cached"] and resumed["steps"] == 8 and resumed["losses"] == losses
    assert (model_dir / "model.safetensors").exists()


def test_dpo_parquet_export_is_read(tmp_path, tiny_cache):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "pairs.parquet"
    pq.write_table(pa.Table.from_pylist([_pair(i) for i in range(4)]), data)
    out = train_dpo(data, "tiny-random", tmp_path / "dpo",
                    DPOSettings(max_steps=1, batch_size=4, learning_rate=1e-3, max_length=128))
    assert out["steps"] == 1 and out["rows"] == 4 and not out["cached"]


def test_dpo_bad_data_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(DistillError, match="not found"):
        train_dpo(tmp_path / "nope.jsonl", "tiny-random", tmp_path / "out")
    no_chosen = tmp_path / "sft.jsonl"
    row = _pair(0)
    del row["chosen"]
    no_chosen.write_text(json.dumps(row) + "\n")
    with pytest.raises(DistillError, match="no chosen column"):
        train_dpo(no_chosen, "tiny-random", tmp_path / "out")
    sft = tmp_path / "messages.jsonl"
    sft.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(DistillError, match="no prompt/chosen/rejected column"):
        main(["--data", str(sft), "--student", "tiny-random", "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
