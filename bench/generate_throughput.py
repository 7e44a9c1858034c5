"""Generation tokens/s of the product's local teacher (clients.local.LocalGenerator) on this machine's device.

Random-init SmolLM2-135M and Gemma-3-270M (the real architectures, from bench/_throughput_arms.py's
configs) are saved to a temp dir with clients.tiny's tokenizer and loaded the way `distill synth`
loads a local teacher: LocalGenerator picks the device (the GPU when there is one) and dtype (bf16
there) through clients/device.py. Greedy, `--batch` prompts per call, `--new-tokens` each; EOS never
stops a row early because the models are random (a few may: counted tokens are the generated ones).

    python bench/generate_throughput.py --cpu-smoke        # tiny shapes, CPU, seconds
    python bench/generate_throughput.py --out $OUT/generate.json   # GPU: both architectures
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-smoke", action="store_true")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--calls", type=int, default=3, help="timed generate calls after one warmup call")
    p.add_argument("--out", default=None)
    args = p.parse_args()

    import torch
    from _throughput_arms import model_config
    from transformers import AutoModelForCausalLM

    from clients.local import LocalGenerator
    from clients.tiny import build_tokenizer

    if args.cpu_smoke:
        args.batch, args.new_tokens, args.calls = 4, 8, 1
    tokenizer = build_tokenizer()
    words = [w.replace("Ġ", " ") for w in tokenizer.get_vocab() if w.startswith("Ġ") and w[1:].isalpha()][:200]
    prompts = ["".join(words[(i * 7 + j) % len(words)] for j in range(40 + i % 60)) for i in range(args.batch)]
    results = {}
    for name in ("smollm2", "gemma3"):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = model_config(name, args.cpu_smoke)
            cfg.vocab_size = max(cfg.vocab_size, len(tokenizer))
            torch.manual_seed(0)
            AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            gen = LocalGenerator(tmp, batch_size=args.batch)  # device and dtype: the product's automatic choice
            gen.generate(prompts, max_new_tokens=args.new_tokens)  # warmup
            if gen.device.startswith("cuda"):
                torch.cuda.synchronize()
            began, tokens = time.perf_counter(), 0
            for _ in range(args.calls):
                out = gen.generate(prompts, max_new_tokens=args.new_tokens)
                tokens += sum(g[0].completion_tokens for g in out)
            if gen.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - began
            results[name] = dict(device=gen.device, dtype=str(gen.dtype), batch=args.batch,
                                 new_tokens=args.new_tokens, calls=args.calls, tokens=tokens, seconds=seconds,
                                 tokens_per_s=tokens / seconds,
                                 gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
            print(f"{name}: {tokens / seconds:,.0f} generated tok/s on {gen.device} ({gen.dtype}), "
                  f"batch {args.batch} x {args.new_tokens} new tokens", flush=True)
            del gen
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
