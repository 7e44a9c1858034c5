import json

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
)

from core.errors import DistillError
from clients.tiny import build_tokenizer
from train.prune import main, prune_layers, prune_model, resolve_keep


def _save(model, tok, path):
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = None  # generate the full length, never stop early
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def llama4(tmp_path_factory):
    """tiny-random has only 2 layers, so the teacher here is the same kind of Llama with 4."""
    tok = build_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.5, tie_word_embeddings=False, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    return _save(LlamaForCausalLM(config), tok, tmp_path_factory.mktemp("llama4"))


@pytest.fixture(scope="module")
def gemma6(tmp_path_factory):
    """A tiny Gemma 3 with sliding and full attention layers, a sliding window shorter than the test's text."""
    tok = build_tokenizer()
    config = Gemma3TextConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=4,
                              layer_types=["sliding_attention", "sliding_attention", "full_attention"] * 2,
                              max_position_embeddings=256, initializer_range=0.5, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    return _save(Gemma3ForCausalLM(config), tok, tmp_path_factory.mktemp("gemma6"))


def _load(path):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def _generate(model, path, use_cache, n=16):
    tok = AutoTokenizer.from_pretrained(path)
    ids = tok("The quick brown fox jumps over", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=use_cache)
    return out[0, ids["input_ids"].shape[1]:].tolist()


def test_resolve_keep():
    assert resolve_keep("every-other", 5) == [0, 2, 4]
    assert resolve_keep("first-half", 30) == list(range(15))
    assert resolve_keep("5,0,-1", 8) == [0, 5, 7]
    assert resolve_keep([3, 1], 4) == [1, 3]
    for bad, match in [("odd-ones", "unknown --keep"), ([4], "out of range"), ([1, 1], "repeat"), ([], "at least")]:
        with pytest.raises(DistillError, match=match):
            resolve_keep(bad, 4)


def test_prune_llama_keeps_teacher_layers_and_generates_with_cache(llama4, tmp_path):
    out = prune_layers(str(llama4), "every-other", tmp_path / "student")
    assert out == tmp_path / "student"
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    assert json.loads((out / "prune.json").read_text())["kept_layers"] == [0, 2]
    teacher, student = _load(llama4), _load(out)
    assert len(student.model.layers) == 2 and student.config.num_hidden_layers == 2
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    for name, tensor in s_sd.items():
        if name.startswith("model.layers."):
            idx, rest = name[len("model.layers."):].split(".", 1)
            t_name = f"model.layers.{[0, 2][int(idx)]}.{rest}"
        else:  # embeddings, final norm, lm_head
            t_name = name
        assert torch.equal(tensor, t_sd[t_name]), name
    assert {n for n in s_sd if not n.startswith("model.layers.")} >= {"model.embed_tokens.weight", "model.norm.weight",
                                                                      "lm_head.weight"}
    assert len(s_sd) < len(t_sd)

    # KV cache: each kept attention must index the cache by its new position, not its teacher index.
    cached = _generate(student, out, use_cache=True)
    assert cached == _generate(student, out, use_cache=False)
    in_memory = prune_model(_load(llama4), [0, 2])
    assert [layer.self_attn.layer_idx for layer in in_memory.model.layers] == [0, 1]
    assert _generate(in_memory, out, use_cache=True) == cached


def test_prune_gemma3_subsets_layer_types(gemma6, tmp_path):
    out = prune_layers(str(gemma6), [0, 2, 4, 5], tmp_path / "student")
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 4
    assert config["layer_types"] == ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]
    student = _load(out)
    assert [layer.self_attn.is_sliding for layer in student.model.layers] == [True, False, True, False]
    teacher = _load(gemma6)
    for new, old in enumerate([0, 2, 4, 5]):
        for (name, p), (_, q) in zip(student.model.layers[new].named_parameters(),
                                     teacher.model.layers[old].named_parameters()):
            assert torch.equal(p, q), (new, old, name)
    # 6 prompt tokens + 16 new ones run well past the sliding window of 4.
    cached = _generate(student, out, use_cache=True)
    assert cached == _generate(student, out, use_cache=False)
    assert _generate(prune_model(_load(gemma6), [0, 2, 4, 5]), out, use_cache=True) == cached


def test_prune_is_reused_replaced_and_guarded(llama4, tmp_path, capsys):
    out = prune_layers(str(llama4), "first-half", tmp_path / "student")
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert prune_layers(str(llama4), [0, 1], tmp_path / "student") == out  # same layers: reused
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    main(["--teacher", str(llama4), "--keep", "0,3", "--output", str(out)])  # other layers: rebuilt in place
    assert json.loads(capsys.readouterr().out)["kept_layers"] == [0, 3]
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left behind
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(DistillError, match="not a pruned model"):
        prune_layers(str(llama4), "every-other", other)
    assert (other / "notes.txt").exists()
    with pytest.raises(DistillError, match="out of range"):
        prune_layers(str(llama4), [7], tmp_path / "x")


@pytest.mark.slow
def test_prune_smollm2_to_half_its_layers(tmp_path):
    out = prune_layers("smollm2-135m-instruct", "every-other", tmp_path / "smol-half")
    student = _load(out)
    assert student.config.num_hidden_layers == len(student.model.layers) == 15
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok.apply_chat_template([{"role": "user", "content": "Is the sun a star?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        logits = student(**ids).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], student.config.vocab_size)
    assert torch.isfinite(logits).all()
    with torch.no_grad():
        new = student.generate(**ids, max_new_tokens=4, do_sample=False)
    assert new.shape[1] > ids["input_ids"].shape[1]
