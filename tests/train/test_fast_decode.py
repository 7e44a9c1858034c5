"""On-policy sampling on the fast path (static KV cache, prompts bucketed to PROMPT_BUCKET) gives the same
greedy tokens as TRL's own sampling: the speed-up changes how tokens are computed, not which."""
import torch
from datasets import Dataset


def _trainer(tmp_path, fast: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DistillationConfig, DistillationTrainer

    from clients.models import model_path
    from train.fast_decode import PROMPT_BUCKET, static_decode_class, use_static_cache

    path = model_path("tiny-random")
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    config = DistillationConfig(output_dir=str(tmp_path / ("fast" if fast else "plain")), use_cpu=True, bf16=False,
                                max_completion_length=10, report_to="none", generation_kwargs={"do_sample": False},
                                pad_to_multiple_of=PROMPT_BUCKET if fast else None)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32", attn_implementation="sdpa")
    teacher = AutoModelForCausalLM.from_pretrained(path, dtype="float32").eval()
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": "Is 2 even?"}]}])
    cls = static_decode_class(DistillationTrainer) if fast else DistillationTrainer
    trainer = cls(model=model, teacher_model=teacher, args=config, train_dataset=data, processing_class=tokenizer)
    if fast:
        use_static_cache(trainer, compile_decode=False)  # transformers compiles it on CUDA only
    return trainer, tokenizer


def test_static_cache_sampling_gives_trls_greedy_tokens(tmp_path, module_cache):
    plain, tokenizer = _trainer(tmp_path, fast=False)
    fast, _ = _trainer(tmp_path, fast=True)
    assert fast.generation_config.cache_implementation == "static" and plain.generation_config.disable_compile
    texts = ["Is 2 even?", "A much longer question about the parity of the number forty-two, asked twice over?",
             "Hi"]
    prompt_ids = [tokenizer(t)["input_ids"] for t in texts]
    want = plain._generate_single_turn(prompt_ids, None, {})
    # Under bf16 mixed precision accelerate wraps the model's forward in autocast, and generation inherits
    # it: a static cache would then get fp32 keys and bf16 values. The fast path samples outside autocast.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fast._generate_single_turn(prompt_ids, None, {})
    assert got == want and all(len(c) > 0 for c in got)
