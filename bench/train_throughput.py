"""Training throughput: plain TRL next to our configuration, same process, same data, same init.

Random-init SmolLM2-135M (Llama) and Gemma-3-270M (5 sliding : 1 global) built from configs in
code, no download. Per task, model and arm: N warmup + M timed optimizer steps, then tokens/s
(non-padding tokens), MFU (6 x params x tokens/s over the GPU's dense bf16 peak; DPO 8 x for the
reference forward; attention FLOPs not counted), peak allocated memory and the loss at every step.

  sft       SFTTrainer, packing (bfd) of lognormal 50-1024-token documents into 16 x 1024
  dpo       DPOTrainer, 8 pairs per step (prompt ~150, completions ~200 tokens), explicit ref model
  onpolicy  DistillationTrainer, 16 prompts per step, 128 sampled tokens, teacher = same architecture

Arms: "plain TRL" = TRL 1.16 defaults (bf16 autocast, activation checkpointing on, sdpa; with
packing TRL is padding-free, so sdpa gets a (T x T) block mask over the whole flattened batch).
"ours" = no activation checkpointing, attention that never builds a mask (PyTorch's built-in
FlashAttention-2 varlen op over TRL's cu_seq_lens, probed against a reference first, sdpa if the
probe fails), regional torch.compile of the decoder layers, TF32, Liger kernels when installed and
not compiling; same batch, learning rate and data order, so the loss curves must coincide.
TRL's own fused chunked cross-entropy runs in both. On-policy keeps sdpa (left-padded decoding).

    /tmp/venv0/bin/python bench/train_throughput.py --cpu-smoke          # tiny models, CPU, ~1-2 min
    python bench/train_throughput.py --only sft --model smollm2           # GPU: one task and model
"""
from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import sys
import time
import traceback
import warnings
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _throughput_arms import (  # noqa: E402
    GPU_SCALE,
    SMOKE_SCALE,
    VARLEN,
    Arm,
    dpo_pairs,
    model_config,
    probe_varlen,
    prompts,
    run_arm,
    sft_docs,
)

# Dense bf16 peak FLOP/s by device-name substring, first match wins (H200 has the H100 SXM's compute).
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("GH200", 989.5e12), ("H200", 989.5e12),
             ("H100", 989.5e12), ("H800", 989.5e12), ("B200", 2250e12), ("A100", 312e12), ("L40S", 362e12),
             ("L4", 121e12)]
FLOPS_PER_TOKEN = {"sft": 6, "dpo": 8}  # x params: fwd+bwd (+ reference forward for DPO)
UNIT = {"sft": "tok/s", "dpo": "pairs/s", "onpolicy": "prompts/s"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def device() -> tuple[str, float | None]:
    if not torch.cuda.is_available():
        return f"CPU ({platform.machine()}, {os.cpu_count()} cores)", None
    name = torch.cuda.get_device_name(0)
    return name, next((peak for key, peak in PEAK_BF16 if key in name), None)


def ours_attention(choice: str, cfg) -> tuple[str, str]:
    """(implementation, why) for the ours arm of SFT and DPO."""
    if choice != "auto":
        return choice, "forced by --ours-attn"
    if not torch.cuda.is_available():
        return VARLEN, "varlen via the per-document reference kernel (CPU)"
    err = probe_varlen(cfg)
    if err is None:
        return VARLEN, "torch.nn.attention.varlen (FlashAttention-2), probe passed"
    log(f"  varlen probe failed ({err}); ours falls back to sdpa")
    return "sdpa", f"sdpa: varlen probe failed: {err}"


def fallbacks(arm: Arm):
    yield arm
    if arm.name != "ours":
        return
    if arm.compile:
        yield replace(arm, compile=False)
    if arm.attn != "sdpa":
        yield replace(arm, attn="sdpa", compile=False)


def loss_gap(plain: dict, ours: dict) -> dict:
    """Largest loss difference at matched tokens: per step when the batches were identical, else
    ours interpolated at plain's cumulative token counts; per step for on-policy (sampled data)."""
    la, lb = np.array(plain["losses"]), np.array(ours["losses"])
    ta, tb = plain.get("step_tokens"), ours.get("step_tokens")
    if not ta or None in ta or None in tb:
        n = min(len(la), len(lb))
        d = np.abs(la[:n] - lb[:n])
        return {"how": "per step; completions are sampled, so batches differ", "max_abs": d.max(), "mean_abs": d.mean()}
    if ta == tb:
        d = np.abs(la - lb)
        return {"how": "per step, identical batches", "max_abs": d.max(), "mean_abs": d.mean()}
    ca, cb = np.cumsum(ta), np.cumsum(tb)
    keep = (ca >= cb[0]) & (ca <= cb[-1])
    d = np.abs(la[keep] - np.interp(ca[keep], cb, lb))
    return {"how": "ours interpolated at plain's cumulative tokens", "max_abs": d.max(), "mean_abs": d.mean()}


def table(results: dict, dev: str, peak: float | None) -> str:
    rows = [("| task | model | arm | attention | act. ckpt | compile | liger | batch | throughput | vs plain "
             "| MFU | peak mem GiB | warmup s | loss first → last | max abs Δloss vs plain |"),
            "|" + "---|" * 15]
    for key, r in results.items():
        task, model, _ = key.split("/")
        if "error" in r:
            rows.append(f"| {task} | {model} | {r['arm']} | | | | | | error: {r['error'][:80]} | | | | | | |")
            continue
        unit = UNIT[task]
        rate = r["tokens_per_s"] if task == "sft" else r["items_per_s"]
        thr = f"{rate:,.0f} {unit}" if task == "sft" else f"{rate:,.2f} {unit}"
        if task == "dpo" and "tokens_per_s" in r:
            thr += f" ({r['tokens_per_s']:,.0f} tok/s)"
        mfu = (f"{FLOPS_PER_TOKEN[task] * r['params'] * r['tokens_per_s'] / peak:.1%}"
               if peak and task in FLOPS_PER_TOKEN and "tokens_per_s" in r else "n/a")
        mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "n/a"
        vs = f"{r['speedup']:.2f}x" if "speedup" in r else ""
        gap = f"{r['loss_gap']['max_abs']:.3f}" if "loss_gap" in r else ""
        rows.append(f"| {task} | {model} | {r['arm']} | {r['attn']} | {'on' if r['checkpointing'] else 'off'} "
                    f"| {'on' if r['compile'] else 'off'} | {'on' if r['liger'] else 'off'} | {r['batch']} | {thr} "
                    f"| {vs} | {mfu} | {mem} | {r['warmup_seconds']:.1f} | {r['losses'][0]:.3f} → "
                    f"{r['losses'][-1]:.3f} | {gap} |")
    return "\n".join(rows)


def save(out: Path, dev: str, peak: float | None, smoke: bool, results: dict, notes: list[str]) -> None:
    """Merge this run's arms into --out; called after every arm, so a run cut off by a time limit keeps what it measured."""
    import transformers
    import trl

    saved = json.loads(out.read_text()) if out.exists() else {}
    if saved.get("device") != dev or saved.get("smoke") != smoke:
        saved = {}  # numbers from another machine or size never mix
    saved.update(device=dev, peak_flops=peak, smoke=smoke, torch=torch.__version__,
                 transformers=transformers.__version__, trl=trl.__version__)
    saved.setdefault("results", {}).update(
        {k: {kk: (float(vv) if isinstance(vv, np.floating) else vv) for kk, vv in v.items()} for k, v in results.items()})
    saved.setdefault("notes", {}).update({n.split(":")[0]: n for n in notes})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(saved, indent=1, default=float))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("smollm2", "gemma3", "both"), default="both")
    p.add_argument("--only", choices=("sft", "dpo", "onpolicy", "all"), default="all")
    p.add_argument("--steps", type=int, help="timed steps (default 30, --cpu-smoke 3); on-policy runs a third")
    p.add_argument("--warmup", type=int, help="untimed steps first, compilation included (default 5, smoke 2)")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny models and batches, runs on CPU")
    p.add_argument("--out", default=str(ROOT / "bench/results/train_throughput.json"),
                   help="JSON with every arm's numbers and loss curves; results of earlier runs are kept")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ours-attn", default="auto",
                   choices=("auto", VARLEN, "sdpa", "flex_attention", "flash_attention_2", "flash_attention_3"))
    p.add_argument("--ours-batch", type=int, help="ours' packed rows per SFT step (default: plain's 16)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto", help="auto: on with CUDA")
    p.add_argument("--liger", choices=("auto", "on", "off"), default="auto",
                   help="ours: auto = when liger_kernel imports and torch.compile is off")
    p.add_argument("--liger-baseline", action="store_true", help="add a 'plain TRL + liger' arm")
    p.add_argument("--table-only", action="store_true", help="print the table of --out and exit")
    args = p.parse_args()

    out = Path(args.out)
    dev, peak = device()
    if args.table_only:
        saved = json.loads(out.read_text())
        print(f"## Training throughput: {saved['device']}\n")
        for note in saved.get("notes", {}).values():
            print(f"- {note}")
        print("\n" + table(saved["results"], saved["device"], saved.get("peak_flops")))
        return 0
    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu_smoke:
        log("warning: no GPU; full-size models on CPU take hours. Use --cpu-smoke to check the script.")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    import datasets
    import transformers
    import trl

    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    from clients.tiny import build_tokenizer

    scale = SMOKE_SCALE if args.cpu_smoke else GPU_SCALE
    steps = args.steps or (3 if args.cpu_smoke else 30)
    warmup = max(1, args.warmup or (2 if args.cpu_smoke else 5))
    compile_on = {"auto": cuda, "on": True, "off": False}[args.compile]
    has_liger = importlib.util.find_spec("liger_kernel") is not None
    liger_on = {"auto": has_liger and not compile_on, "on": True, "off": False}[args.liger]
    tokenizer = build_tokenizer()
    models = ["smollm2", "gemma3"] if args.model == "both" else [args.model]
    tasks = ["sft", "dpo", "onpolicy"] if args.only == "all" else [args.only]
    log(f"device: {dev}; torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}; "
        f"warmup {warmup} + {steps} timed steps; compile {compile_on}, liger {liger_on} (installed: {has_liger})")

    results: dict[str, dict] = {}
    notes: list[str] = []
    for model in models:
        cfg = model_config(model, args.cpu_smoke)
        attn, why = ours_attention(args.ours_attn, cfg)
        notes.append(f"{model}: ours attention = {attn} ({why})")
        for task in tasks:
            n = steps if task != "onpolicy" else max(2, steps // 3)
            batch_max = {"sft": max(scale.sft_batch, args.ours_batch or 0), "dpo": scale.dpo_batch,
                         "onpolicy": scale.onpolicy_batch}[task]
            if task == "sft":
                docs = sft_docs(int((warmup + n) * batch_max * scale.max_length * 1.1), cfg.vocab_size, scale,
                                cfg.eos_token_id, args.seed)
                data = {"input_ids": docs, "labels": docs}
            elif task == "dpo":
                data = dpo_pairs((warmup + n) * batch_max + 8, tokenizer, scale, args.seed)
            else:
                data = prompts((warmup + n) * batch_max + 8, tokenizer, scale, args.seed)
            arms = [Arm("plain TRL")]
            if args.liger_baseline and has_liger:
                arms.append(Arm("plain TRL + liger", liger=True))
            arms.append(Arm("ours", attn=attn if task != "onpolicy" else "sdpa", checkpointing=False,
                            compile=compile_on, liger=liger_on, tf32=cuda,
                            batch=args.ours_batch if task == "sft" else None))
            for arm in arms:
                key = f"{task}/{model}/{arm.name}"
                errors = []
                for attempt in fallbacks(arm):  # ours: without compile, then with sdpa, if a GPU path fails
                    log(f"{key}: {warmup} + {n} steps, attention {attempt.attn}, compile {attempt.compile} ...")
                    began = time.perf_counter()
                    try:
                        r = run_arm(task, attempt, model, args.cpu_smoke, data, tokenizer, scale, warmup, n,
                                    args.lr, args.seed)
                        log(f"  done in {time.perf_counter() - began:.0f} s")
                        break
                    except Exception as exc:  # noqa: BLE001 - one arm failing must not lose the others
                        traceback.print_exc()
                        errors.append(f"attention {attempt.attn}, compile {attempt.compile}: "
                                      f"{type(exc).__name__}: {str(exc)[:300]}")
                        gc.collect()
                        if cuda:
                            torch.cuda.empty_cache()
                else:
                    r = {"arm": arm.name, "error": " | ".join(errors)}
                if errors and "error" not in r:
                    r["failed_first"] = errors
                    notes.append(f"{key} fell back after: " + " | ".join(errors))
                results[key] = r
                save(out, dev, peak, args.cpu_smoke, results, notes)
            plain = results[f"{task}/{model}/plain TRL"]
            for arm in arms[1:]:
                r = results[f"{task}/{model}/{arm.name}"]
                if "error" in r or "error" in plain:
                    continue
                rate = "tokens_per_s" if task == "sft" else "items_per_s"
                r["speedup"] = r[rate] / plain[rate]
                r["loss_gap"] = loss_gap(plain, r)

    print(f"\n## Training throughput: {dev}"
          f"{f' (dense bf16 peak {peak / 1e12:.0f} TFLOP/s)' if peak else ''}\n")
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}; "
          f"{'CPU smoke sizes' if args.cpu_smoke else 'real architectures, random init'}; "
          f"{warmup} warmup + {steps} timed steps (on-policy {max(2, steps // 3)}), lr {args.lr}, seed {args.seed}.")
    for note in notes:
        print(f"- {note}")
    print("\nLoss at every step:")
    for key, r in results.items():
        if "losses" in r:
            print(f"- {key}: " + " ".join(f"{x:.3f}" for x in r["losses"]))
            if "loss_gap" in r:
                g = r["loss_gap"]
                print(f"  vs plain: max |Δ| {g['max_abs']:.4f}, mean |Δ| {g['mean_abs']:.4f} ({g['how']})")
    print()
    print(table(results, dev, peak))

    save(out, dev, peak, args.cpu_smoke, results, notes)
    log(f"wrote {out}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
