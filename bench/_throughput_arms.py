"""Helpers of bench/train_throughput.py: models on disk, synthetic data, one timed run per arm.

The arms run the product's own code: "ours" is `train.fast.resolve_speed("fast")` loaded and
configured by train/fast.py (load_student, load_frozen, trainer_arguments, sft_arguments), with
train/varlen.py's attention and, on-policy, train/fast_decode.py's sampling, wired as
train/sft.py, train/dpo.py and train/onpolicy.py wire them; logit KD is train/logit_kd.py's
forward (decoder, then train/kd_losses.py's chunked kd_loss) and optimizer step. "plain TRL" is
TRL 1.16's defaults: `trainer_arguments(resolve_speed("plain")) == {}` and the model passed as a
path for TRL to load, as the product's `--speed plain` does. The bench keeps no copy of either.

Nothing here downloads anything: the models are random-init from configs written below, saved once
per run to a temporary directory so that both arms load them the way the product loads a student;
the tokenizer is clients.tiny's in-memory BPE (it only supplies pad/eos ids and tokenizes the DPO
and on-policy text; SFT and logit-KD data are pre-tokenized ids over the model's own vocabulary).
"""
from __future__ import annotations

import gc
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    PrinterCallback,
    TrainerCallback,
)

from train.fast import (
    Speed,
    apply_globals,
    compile_layers,
    load_frozen,
    load_student,
    sft_arguments,
    trainer_arguments,
)
from train.fast_decode import PROMPT_BUCKET, static_decode_class, use_static_cache
from train.kd_step import KDSettings, kd_accelerator, kd_student, kd_train_step
from train.varlen import PACKED_MAX_LEN  # the varlen kernel's max length, set by train.fast.sft_arguments

KD_K = KDSettings().k  # the product's default top-k


# ---------------------------------------------------------------- models
def model_config(name: str, smoke: bool):
    """The real architectures (random init); `smoke` keeps their shape features but makes them tiny."""
    if name == "smollm2":  # HuggingFaceTB/SmolLM2-135M
        size = dict(vocab_size=2048, hidden_size=96, intermediate_size=192, num_hidden_layers=2,
                    num_attention_heads=6, num_key_value_heads=2) if smoke else \
            dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                 num_attention_heads=9, num_key_value_heads=3)
        return LlamaConfig(**size, max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=True,
                           rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
                           bos_token_id=1, eos_token_id=2, pad_token_id=3)
    if name == "gemma3":  # google/gemma-3-270m: 5 sliding-window layers to 1 global layer
        size = dict(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                    num_attention_heads=2, num_key_value_heads=1, head_dim=32, sliding_window=64,
                    query_pre_attn_scalar=32) if smoke else \
            dict(vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
                 num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512,
                 query_pre_attn_scalar=256)
        n = size["num_hidden_layers"]
        return Gemma3TextConfig(**size, layer_types=[("full" if (i + 1) % 6 == 0 else "sliding") + "_attention"
                                                     for i in range(n)],
                                max_position_embeddings=32768, rms_norm_eps=1e-6, tie_word_embeddings=True,
                                rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                                 "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
                                bos_token_id=1, eos_token_id=2, pad_token_id=3)
    raise ValueError(f"unknown model {name}")


def save_models(name: str, smoke: bool, seed: int, root: Path, teacher: bool) -> dict[str, str]:
    """The student (seed) and, for on-policy, a same-architecture teacher (seed + 1), random-init in fp32 and
    saved as checkpoints: every arm then loads identical weights the way the product loads a model."""
    dirs = {}
    for role, s in [("student", seed)] + ([("teacher", seed + 1)] if teacher else []):
        path = root / f"{name}-{role}"
        if not path.exists():
            torch.manual_seed(s)
            model = AutoModelForCausalLM.from_config(model_config(name, smoke), dtype=torch.float32)
            model.save_pretrained(path)
            del model
        dirs[role] = str(path)
    gc.collect()
    return dirs


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())  # tied embeddings counted once (= the LM head matmul)


# ---------------------------------------------------------------- synthetic data
@dataclass
class Scale:
    max_length: int
    sft_batch: int  # packed rows of max_length per step (both arms)
    doc_median: int
    doc_min: int
    dpo_batch: int
    dpo_prompt_median: int
    dpo_completion_median: int
    onpolicy_batch: int
    prompt_median: int
    max_new_tokens: int
    kd_batch: int  # logit KD: right-padded documents per step (train/logit_kd.py does not pack)


GPU_SCALE = Scale(1024, 16, 300, 50, 8, 150, 200, 16, 100, 128, 16)
SMOKE_SCALE = Scale(256, 4, 80, 20, 2, 40, 40, 2, 16, 8, 4)


def _lengths(rng, median, lo, hi, n):
    return np.clip(np.rint(rng.lognormal(np.log(median), 0.8, n)), lo, hi).astype(int)


def sft_docs(total_tokens: int, vocab: int, scale: Scale, eos: int, seed: int) -> list[list[int]]:
    """Documents from a random sparse Markov chain (8 successors per token, Zipf weights) over up to 8k ids:
    learnable, so the loss curve falls from ln V towards ~1.7 nats. Lognormal lengths in [doc_min, max_length]."""
    rng = np.random.default_rng(seed)
    v = min(8192, vocab - 16)
    succ = rng.integers(0, v, size=(v, 8))
    cdf = np.cumsum(1 / np.arange(1, 9))
    cdf /= cdf[-1]
    lengths = []
    while sum(lengths) < total_tokens:
        lengths += _lengths(rng, scale.doc_median, scale.doc_min, scale.max_length, 256).tolist()
    ids = np.empty((len(lengths), max(lengths)), dtype=np.int64)
    ids[:, 0] = rng.integers(0, v, len(lengths))
    for t in range(1, ids.shape[1]):
        ids[:, t] = succ[ids[:, t - 1], np.searchsorted(cdf, rng.random(len(lengths)))]
    return [(ids[i, :n] + 16).tolist()[:-1] + [eos] for i, n in enumerate(lengths)]


def _words(tokenizer) -> list[str]:
    """Whole-word tokens of the tiny BPE ("Ġthe" -> " the"): text built from them re-tokenizes 1:1."""
    words = [t for t in tokenizer.get_vocab() if t.startswith("Ġ") and t[1:].isalpha()]
    return sorted(w.replace("Ġ", " ") for w in words)


def _text(rng, words, n) -> str:
    return "".join(rng.choice(words, n))


def dpo_pairs(n: int, tokenizer, scale: Scale, seed: int) -> dict[str, list[str]]:
    rng, words = np.random.default_rng(seed), _words(tokenizer)
    hi = scale.max_length // 2
    rows = {"prompt": [], "chosen": [], "rejected": []}
    for p, c, r in zip(_lengths(rng, scale.dpo_prompt_median, 8, hi, n),
                       _lengths(rng, scale.dpo_completion_median, 4, hi, n),
                       _lengths(rng, scale.dpo_completion_median, 4, hi, n)):
        rows["prompt"].append(_text(rng, words, p))
        rows["chosen"].append(_text(rng, words, c))
        rows["rejected"].append(_text(rng, words, r))
    return rows


def prompts(n: int, tokenizer, scale: Scale, seed: int) -> dict[str, list[str]]:
    rng, words = np.random.default_rng(seed), _words(tokenizer)
    lens = _lengths(rng, scale.prompt_median, 4, 4 * scale.prompt_median, n)
    return {"prompt": [_text(rng, words, m) for m in lens]}


def kd_examples(docs: list[list[int]], vocab: int, seed: int) -> list[dict]:
    """train/logit_kd.py's examples over the SFT documents: the first token is the prompt, every later token a
    target with synthetic top-k teacher log-probs (the true next token plus 19 other distinct ids, 95% of the mass)."""
    rng = np.random.default_rng(seed)
    out = []
    for doc in docs:
        nxt = np.asarray(doc[1:], dtype=np.int64)
        n = len(nxt)
        offsets = 1 + rng.integers(0, vocab - KD_K - 1, (n, 1)) + np.arange(KD_K - 1)  # distinct, never 0 mod vocab
        ids = np.concatenate([nxt[:, None], (nxt[:, None] + offsets) % vocab], 1).astype(np.int32)
        logits = rng.normal(0, 2, (n, KD_K))
        logits[:, 0] += 2  # the teacher mostly agrees with the data
        p = np.exp(logits - logits.max(1, keepdims=True))
        values = np.log(0.95 * p / p.sum(1, keepdims=True)).astype(np.float32)
        out.append({"input_ids": list(doc), "n_prompt": 1, "t_ids": ids, "t_values": values})
    return out


# ---------------------------------------------------------------- one timed run
@dataclass
class Arm:
    """One arm: a name and the train.fast.Speed it trains with (plain: resolve_speed("plain"))."""
    name: str
    speed: Speed
    batch: int | None = None  # None: the task's batch
    fallback: str = ""  # what a failed first attempt changed in the Speed
    extra_args: dict = field(default_factory=dict)  # plain on the CPU smoke: bf16=False (TRL would autocast)
    compile_options: dict = field(default_factory=dict)  # the CPU smoke: backend="eager" (inductor: minutes per arm)


def _student(arm: Arm, path: str, **kwargs):
    """train.fast.load_student; with compile_options, its compile_layers step is done here with those options."""
    if arm.compile_options and arm.speed.compile_layers and kwargs.get("compile_model", True):
        return compile_layers(load_student(path, arm.speed, **dict(kwargs, compile_model=False)), **arm.compile_options)
    return load_student(path, arm.speed, **kwargs)


def _frozen(arm: Arm, path: str, **kwargs):
    """train.fast.load_frozen; with compile_options, as _student."""
    if arm.compile_options and arm.speed.compile_layers:
        model = load_frozen(path, replace(arm.speed, compile_layers=False), **kwargs)
        return compile_layers(model, **arm.compile_options)
    return load_frozen(path, arm.speed, **kwargs)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Clock(TrainerCallback):
    """Wall time at the start and at every optimizer step's end, the device synchronised."""

    def __init__(self):
        self.begin, self.marks = 0.0, []

    def on_train_begin(self, args, state, control, **kwargs):
        sync()
        self.begin = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        sync()
        self.marks.append(time.perf_counter())


def _count(inputs):
    """Trained (non-pad) tokens of a collated batch; None where the batch is raw rows (on-policy)."""
    if not isinstance(inputs, dict):
        return None
    if "attention_mask" in inputs:
        return inputs["attention_mask"].sum()  # a tensor: read at the end, no sync per step
    if "position_ids" in inputs:  # padding-free: one row of real tokens
        return inputs["position_ids"].shape[-1]
    return None


def traced(cls):
    """`cls` recording each step's loss and token count without forcing a device sync."""

    class Traced(cls):
        def training_step(self, model, inputs, num_items_in_batch=None):
            self.bench_tokens.append(_count(inputs))
            loss = super().training_step(model, inputs, num_items_in_batch)
            self.bench_losses.append(loss.detach())
            return loss

    Traced.__name__ = cls.__name__
    return Traced


def workload_args(batch: int, steps: int, lr: float, seed: int, out_dir: str) -> dict:
    """The run's shape, identical in both arms; the speed settings come from train.fast (plain: none)."""
    return dict(output_dir=out_dir, max_steps=steps, per_device_train_batch_size=batch, learning_rate=lr,
                lr_scheduler_type="constant_with_warmup", warmup_steps=min(5, steps), seed=seed,
                logging_steps=10, save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0)


def _trl_trainer(task: str, arm: Arm, dirs: dict, dataset, tokenizer, scale: Scale, args: dict):
    """The TRL trainer of `task` built as train/sft.py, train/dpo.py and train/onpolicy.py build theirs."""
    speed, plain = arm.speed, arm.speed.name == "plain"
    args = dict(args, **trainer_arguments(speed), **arm.extra_args)
    if task == "sft":
        from trl import SFTConfig, SFTTrainer

        # Packing (bfd, padding-free) into batch x max_length is the workload of both arms, as in the issue;
        # ours gets it from train.fast.sft_arguments (which also sets the varlen kernel's PACKED_MAX_LEN).
        cfg = SFTConfig(**args, max_length=scale.max_length,
                        **{"packing": True, "packing_strategy": "bfd", **sft_arguments(speed, scale.max_length)})
        model = dirs["student"] if plain else _student(arm, dirs["student"])
        return traced(SFTTrainer)(model=model, args=cfg, train_dataset=dataset, processing_class=tokenizer)
    if task == "dpo":
        from trl import DPOConfig, DPOTrainer

        cfg = DPOConfig(**args, max_length=scale.max_length)
        # Plain: TRL loads the policy and builds its own reference. Ours: train/dpo.py's frozen reference.
        ref = None if plain else _frozen(arm, dirs["student"])
        model = dirs["student"] if plain else _student(arm, dirs["student"])
        return traced(DPOTrainer)(model=model, ref_model=ref, args=cfg, train_dataset=dataset,
                                  processing_class=tokenizer)
    from trl import DistillationConfig, DistillationTrainer

    static = speed.static_decode and not plain
    cfg = DistillationConfig(**args, max_completion_length=scale.max_new_tokens,
                             teacher_model_init_kwargs={"dtype": "float32"} if plain else None,
                             **({"pad_to_multiple_of": PROMPT_BUCKET} if static else {}))
    # train/onpolicy.py: the student samples left-padded, so sdpa and uncompiled (transformers compiles the
    # static-cache decode step); the frozen teacher is bf16 with compiled layers on the fast path.
    model = dirs["student"] if plain else _student(arm, dirs["student"], attention="sdpa", compile_model=False)
    teacher = dirs["teacher"] if plain else _frozen(arm, dirs["teacher"], attention="sdpa")
    cls = static_decode_class(DistillationTrainer) if static else DistillationTrainer
    trainer = traced(cls)(model=model, teacher_model=teacher, args=cfg, train_dataset=dataset,
                          processing_class=tokenizer)
    if static:
        use_static_cache(trainer, compile_decode=speed.cuda)
    return trainer


def _kd_run(arm: Arm, dirs: dict, examples: list[dict], batch: int, total_steps: int, lr: float, seed: int):
    """train/logit_kd.py's loop, one process, no accumulation: load_student (varlen over right-padded rows,
    compiled layers, TF32 on the fast path), accelerate with bf16 mixed precision when the Speed says bf16,
    the decoder's hidden states at the target positions into the chunked kd_loss, clip 1.0, AdamW."""
    speed = arm.speed
    torch.manual_seed(seed)
    student = _student(arm, dirs["student"])
    settings = KDSettings(batch_size=batch, learning_rate=lr, seed=seed, mixed_precision="bf16" if speed.bf16 else "no")
    accelerator = kd_accelerator(settings, speed)
    kd = kd_student(student, settings).train()  # train/logit_kd.py's module, step and normalisation
    optimizer = torch.optim.AdamW(kd.parameters(), lr=lr)
    kd, optimizer = accelerator.prepare(kd, optimizer)
    order, rng = [], random.Random(seed)
    losses, tokens, marks = [], [], []
    sync()
    begin = time.perf_counter()
    for _ in range(total_steps):
        while len(order) < batch:
            order += rng.sample(range(len(examples)), len(examples))
        rows = [examples[i] for i in order[:batch]]
        del order[:batch]
        losses.append(kd_train_step(accelerator, kd, optimizer, [rows]))
        tokens.append(sum(len(e["input_ids"]) for e in rows))
        sync()
        marks.append(time.perf_counter())
    info = dict(params=n_params(student), attn=student.config._attn_implementation, checkpointing=False)
    accelerator.free_memory()
    del kd, optimizer, student, accelerator
    return info, losses, tokens, begin, marks


def run_arm(task: str, arm: Arm, dirs: dict, data, tokenizer, scale: Scale, warmup: int, steps: int,
            lr: float, seed: int) -> dict:
    """Train one arm for warmup + steps optimizer steps; time the last `steps`."""
    import tempfile

    from datasets import Dataset

    cuda = torch.cuda.is_available()
    torch._dynamo.reset()  # no compiled graph or recompile budget carries over between arms
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    PACKED_MAX_LEN[0] = None  # train.fast.sft_arguments sets it for ours SFT
    apply_globals(arm.speed)  # TF32 off for plain: an earlier ours arm must not speed up the baseline
    batch = arm.batch or {"sft": scale.sft_batch, "dpo": scale.dpo_batch, "onpolicy": scale.onpolicy_batch,
                          "logit_kd": scale.kd_batch}[task]
    if task == "logit_kd":
        info, losses, tokens, begin, marks = _kd_run(arm, dirs, data, batch, warmup + steps, lr, seed)
        checkpointing = False
    else:
        with tempfile.TemporaryDirectory() as out_dir:
            trainer = _trl_trainer(task, arm, dirs, Dataset.from_dict(data), tokenizer, scale,
                                   workload_args(batch, warmup + steps, lr, seed, out_dir))
            trainer.bench_tokens, trainer.bench_losses = [], []
            trainer.remove_callback(PrinterCallback)  # the log dicts would litter stdout
            clock = Clock()
            trainer.add_callback(clock)
            trainer.train()
            sync()
        info = dict(params=n_params(trainer.model), attn=trainer.model.config._attn_implementation)
        checkpointing = bool(trainer.args.activation_checkpointing)
        losses, tokens, begin, marks = trainer.bench_losses, trainer.bench_tokens, clock.begin, clock.marks
        del trainer
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    if len(marks) != warmup + steps:
        raise RuntimeError(f"{len(marks)} optimizer steps ran, expected {warmup + steps}")
    seconds = marks[-1] - marks[warmup - 1]
    tokens = [None if t is None else int(t) for t in tokens]
    step_s = np.diff([begin] + marks).tolist()
    plain = arm.speed.name == "plain"
    result = dict(arm=arm.name, speed=arm.speed.as_dict(), attn=info["attn"], checkpointing=checkpointing,
                  compile=arm.speed.compile_layers and not plain,
                  static_decode=task == "onpolicy" and arm.speed.static_decode and not plain, batch=batch,
                  params=info["params"], warmup_steps=warmup, timed_steps=steps, seconds=seconds,
                  warmup_seconds=marks[warmup - 1] - begin, median_step_s=float(np.median(step_s[warmup:])),
                  step_seconds=step_s, peak_mem_gib=peak, losses=[float(x) for x in losses], step_tokens=tokens,
                  items_per_s=batch * steps / seconds)
    if arm.fallback:
        result["fallback"] = arm.fallback
    if result["compile"]:
        result["compile_backend"] = arm.compile_options.get("backend", "inductor")
    if all(t is not None for t in tokens):
        result["tokens_per_s"] = sum(tokens[warmup:]) / seconds
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result
