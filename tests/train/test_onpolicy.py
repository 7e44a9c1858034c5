import json
import math
import shutil
from pathlib import Path

import pytest

from core.errors import DistillError
from train.onpolicy import OnPolicySettings, main, train_onpolicy


@pytest.fixture(scope="module")
def teacher_dir(module_cache, tmp_path_factory) -> Path:
    """A tiny model from another seed: same vocabulary as tiny-random, different weights."""
    from clients.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("teacher") / "tiny-teacher", seed=1234)


def _prompt_row(i: int) -> dict:
    """Shaped like `curation.export` kind 'prompt': a message list plus lineage columns."""
    return {"prompt": [{"role": "user", "content": f"Question: Is {i} even?\nOptions: Yes, No"}],
            "prompt_id": f"p{i}", "gold": "Yes" if i % 2 == 0 else "No"}


def _sft_row(i: int) -> dict:
    gold = "Yes" if i % 2 == 0 else "No"
    return {"messages": [{"role": "user", "content": f"Question: Is {i} even?\nOptions: Yes, No"},
                         {"role": "assistant", "content": f"{i} divided by two leaves {i % 2}.\nAnswer: {gold}"}],
            "prompt_id": f"p{i}", "sample_id": f"s{i}"}


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


SETTINGS = OnPolicySettings(max_steps=6, batch_size=4, learning_rate=1e-2, beta=0.5, max_new_tokens=12,
                            max_length=128)


def _mean(xs):
    return sum(xs) / len(xs)


def test_onpolicy_distillation_trains_is_cached_and_resumes(tmp_path, teacher_dir):
    data = _write(tmp_path / "prompts.jsonl", [_prompt_row(i) for i in range(8)])
    out = train_onpolicy(data, "tiny-random", str(teacher_dir), tmp_path / "op", SETTINGS)
    losses = out["losses"]
    assert out["steps"] == 6 and not out["cached"] and out["mode"] == "onpolicy"
    assert out["rows"] == 8 == out["rows_used"] and len(losses) == 6
    assert all(math.isfinite(x) and x > 0 for x in losses), losses
    # A random student against a different random teacher: the JSD must come down.
    assert _mean(losses[-2:]) < _mean(losses[:2]), losses
    assert all(n > 0 for n in out["completion_mean_length"])
    model_dir = Path(out["model_dir"])
    assert (model_dir / "model.safetensors").exists() and (model_dir / "tokenizer_config.json").exists()
    assert json.loads((model_dir / "train_summary.json").read_text())["losses"] == losses

    again = train_onpolicy(data, "tiny-random", str(teacher_dir), tmp_path / "op", SETTINGS)
    assert again["cached"] and again["model_dir"] == out["model_dir"] and again["losses"] == losses

    # Killed after its last checkpoint, before the final rename: resumes rather than retraining.
    shutil.rmtree(model_dir)
    resumed = train_onpolicy(data, "tiny-random", str(teacher_dir), tmp_path / "op", SETTINGS)
    assert not resumed["cached"] and resumed["steps"] == 6 and resumed["losses"] == losses
    assert (model_dir / "model.safetensors").exists()

    # Sanity: a teacher identical to the student gives a zero divergence, so the loss above is the teacher's.
    same = train_onpolicy(data, "tiny-random", "tiny-random", tmp_path / "same",
                          OnPolicySettings(**{**SETTINGS.__dict__, "max_steps": 1}))
    assert same["losses"][0] == pytest.approx(0.0, abs=1e-5) and losses[0] > 1e-3, (same["losses"], losses)

    # Another setting is another run.
    other = train_onpolicy(data, "tiny-random", str(teacher_dir), tmp_path / "op",
                           OnPolicySettings(**{**SETTINGS.__dict__, "max_steps": 1}))
    assert other["model_dir"] != out["model_dir"] and other["steps"] == 1


def test_mixed_policy_uses_sft_completions_from_parquet(tmp_path, teacher_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "sft.parquet"
    pq.write_table(pa.Table.from_pylist([_sft_row(i) for i in range(4)]), data)
    settings = OnPolicySettings(**{**SETTINGS.__dict__, "max_steps": 4, "lmbda": 0.5})
    out = train_onpolicy(data, "tiny-random", str(teacher_dir), tmp_path / "mix", settings)
    assert out["steps"] == 4 and all(math.isfinite(x) for x in out["losses"])
    # Seeded coin per step: both kinds of batch happen in 4 steps at lmbda=0.5 with seed 0.
    assert set(out["on_policy"]) == {0.0, 1.0}, out["on_policy"]


def test_self_distillation_runs_with_privileged_trace(tmp_path, module_cache):
    data = _write(tmp_path / "sft.jsonl", [_sft_row(i) for i in range(4)])
    settings = OnPolicySettings(**{**SETTINGS.__dict__, "max_steps": 3, "max_length": 320})
    out = train_onpolicy(data, "tiny-random", None, tmp_path / "sd", settings, self_distill=True)
    assert out["mode"] == "selfdistill" and out["steps"] == 3 and not out["cached"]
    assert len(out["losses"]) == 3 and all(math.isfinite(x) for x in out["losses"])
    # Step 1: the teacher is the student's own weights, yet it sees the trace, so the divergence is not 0.
    assert out["losses"][0] > 0, out["losses"]
    assert (Path(out["model_dir"]) / "model.safetensors").exists()
    assert train_onpolicy(data, "tiny-random", None, tmp_path / "sd", settings, self_distill=True)["cached"]


def test_bad_input_is_a_clear_error(tmp_path, module_cache):
    with pytest.raises(DistillError, match="not found"):
        train_onpolicy(tmp_path / "nope.jsonl", "tiny-random", "tiny-random", tmp_path / "out")
    no_prompt = _write(tmp_path / "pairs.jsonl", [{"chosen": [], "rejected": []}])
    with pytest.raises(DistillError, match="no prompt or messages column"):
        train_onpolicy(no_prompt, "tiny-random", "tiny-random", tmp_path / "out")
    prompts = _write(tmp_path / "prompts.jsonl", [_prompt_row(0)])
    with pytest.raises(DistillError, match="verified trace"):
        train_onpolicy(prompts, "tiny-random", None, tmp_path / "out", self_distill=True)
    with pytest.raises(DistillError, match="no teacher"):
        main(["--data", str(prompts), "--student", "tiny-random", "--output", str(tmp_path / "out")])
    with pytest.raises(DistillError, match="needs a completion"):
        train_onpolicy(prompts, "tiny-random", "tiny-random", tmp_path / "out",
                       OnPolicySettings(lmbda=0.5))
    with pytest.raises(DistillError, match="longer than"):
        train_onpolicy(prompts, "tiny-random", "tiny-random", tmp_path / "out",
                       OnPolicySettings(max_length=20, max_new_tokens=16))
    assert not (tmp_path / "out").exists()
