"""MinHash near-duplicate detection, ours vs datasketch and distilabel, on planted near-duplicates.

The corpus: N documents of ~120 words drawn Zipf-like from 5,000 made-up words, built in 10
blocks (10,000-doc blocks for --million), deterministic for --seed. One doc in 40 of each block is
copied into the next block and edited (words substituted, last words dropped) until the exact
shingle Jaccard with its original lands in [level, level + 0.02) for a level cycling through
0.95 0.9 0.85 0.8 0.7 0.5. A pair is a true duplicate when its exact Jaccard over the shared
shingling (word 5-grams of curation.minhash.normalise by default) is >= --threshold: the
planted pairs at or above it, plus any other pair a method reports that passes the exact check
(random 120-word docs essentially never do).

Every method gets the same shingling, num_perm 128 and threshold, runs once untimed on the first
1,000 docs (imports, caches), then is timed from texts to pairs (shingling included, corpus
building not) on one core (thread env vars set to 1):
  ours                `curation.minhash`: `signatures` on batches of --batch docs + `LshIndex.add`
                      (verifies candidates, so its bands x rows favour recall: 14 x 9 at 0.8)
  datasketch          `MinHash(num_perm).update_batch(shingles)` per doc, `MinHashLSH.query` then
                      `insert`, each query result taken as a duplicate (curation.dedup's way)
  datasketch+verify   the same, keeping only candidates whose `MinHash.jaccard` >= threshold
  distilabel          `MinHashDedup` (its own venv, run in a child process) with its tokenizer
                      swapped for the same shingles; it gives a keep flag per doc, not pairs
Pair precision/recall compare reported pairs with the true pairs; dup-doc precision/recall compare
the docs a method would drop (the later doc of each reported pair; distilabel: keep=False) with
the later docs of true pairs. Peak RSS is the process's high-water mark during the method, above
its RSS when the method started (Linux clear_refs; the whole process's peak if that fails).

run:
  /tmp/venv0/bin/python bench/dedup.py             # 20,000 docs (~30 s)
  /tmp/venv0/bin/python bench/dedup.py --quick     # 4,000 docs
  /tmp/venv0/bin/python bench/dedup.py --million   # ours alone on 1,000,000 docs (~1 min)
  options: --docs N  --threshold 0.8  --ngram 5  --shingle word|char  --batch 10000  --seed 0
           --distilabel-python PATH
distilabel goes in a venv of its own (distilabel 1.5.3's MinHashLSH subclass breaks on datasketch >= 1.8):
  python3 -m venv /tmp/venv-distilabel && /tmp/venv-distilabel/bin/pip install distilabel requests "datasketch<1.8"
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy is imported: one core for every method

import argparse
import inspect
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from curation import minhash
from curation.minhash import LshIndex, MinHashParams, normalise, signatures

LEVELS = (0.95, 0.9, 0.85, 0.8, 0.7, 0.5)
VOCAB_SIZE, DOC_WORDS, COPY_EVERY = 5_000, 120, 40
WARMUP = 1_000  # docs each method runs once, untimed, before its timed run


# ---- corpus --------------------------------------------------------------------------------------

def shingles(text: str, p: MinHashParams) -> set[bytes]:
    """The shingles every method sees (curation.dedup.shingles, generalised to char n-grams)."""
    norm = normalise(text)
    if p.shingle == "char":
        return {norm[i:i + p.ngram].encode() for i in range(max(len(norm) - p.ngram + 1, 1))}
    words = norm.split()
    if len(words) < p.ngram:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + p.ngram]).encode() for i in range(len(words) - p.ngram + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def vocabulary(seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng([seed, 0])
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = sorted({"".join(rng.choice(letters, rng.integers(2, 10))) for _ in range(2 * VOCAB_SIZE)})
    words = rng.permutation(words)[:VOCAB_SIZE].tolist()
    weights = 1.0 / (np.arange(VOCAB_SIZE) + 2.7)  # Zipf-Mandelbrot: "the" ~ 5%, a long tail
    return words, weights / weights.sum()


def plant(words: list[str], level: float, vocab: list[str], rng: np.random.Generator,
          p: MinHashParams) -> tuple[str, float]:
    """Edit a copy of `words` until its exact Jaccard with the original is in [level, level + 0.02)."""
    def shingle_set(ws: list[str]) -> set:  # vocabulary words are normalised already: skip normalise()
        if p.shingle == "word" and len(ws) >= p.ngram:
            return set(zip(*(ws[i:] for i in range(p.ngram))))
        return shingles(" ".join(ws), p)

    base, cur, j = shingle_set(words), list(words), 1.0
    for _ in range(5_000):
        cand = list(cur)
        if rng.random() < 0.7 and len(cand) > 1:
            cand[rng.integers(len(cand))] = vocab[rng.integers(len(vocab))]
        elif len(cand) > 1:
            cand.pop()  # dropping the last word removes one word shingle: fine steps near 1.0
        cj = jaccard(base, shingle_set(cand))
        if cj < level:
            continue  # overshot: try another edit from the same state
        cur, j = cand, cj
        if j < level + 0.02:
            break
    return " ".join(cur), j


def blocks(n: int, block: int, p: MinHashParams, seed: int):
    """Yield (first global index, texts, planted pairs [(original, copy, level, exact J)]) per block."""
    vocab, weights = vocabulary(seed)
    carried: list[tuple[int, list[str]]] = []  # originals picked in the previous block
    for k, start in enumerate(range(0, n, block)):
        size = min(block, n - start)
        rng = np.random.default_rng([seed, 1, k])
        lengths = rng.integers(DOC_WORDS - 10, DOC_WORDS + 11, size)
        flat = [vocab[i] for i in rng.choice(VOCAB_SIZE, size=int(lengths.sum()), p=weights).tolist()]
        ends = np.cumsum(lengths).tolist()
        words = [flat[e - n_words: e] for e, n_words in zip(ends, lengths.tolist())]
        texts = [" ".join(w) for w in words]
        planted = []
        slots = rng.choice(size, min(len(carried), size), replace=False)
        for q, (slot, (orig, orig_words)) in enumerate(zip(slots, carried)):
            level = LEVELS[(orig // block + q) % len(LEVELS)]
            texts[slot], j = plant(orig_words, level, vocab, rng, p)
            planted.append((orig, start + int(slot), level, j))
        taken = set(slots.tolist())
        picks = [i for i in rng.choice(size, size // COPY_EVERY, replace=False).tolist() if i not in taken]
        carried = [(start + i, words[i]) for i in picks]
        yield start, texts, planted


# ---- measuring -----------------------------------------------------------------------------------

def _status(field: str) -> float:
    lines = Path("/proc/self/status").read_text().splitlines()
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith(field)), float("nan"))  # MB


def reset_peak() -> float:
    """Reset the RSS high-water mark (where Linux allows it); return the RSS now, in MB."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status("VmRSS")


def peak_above(start_mb: float) -> float:
    return _status("VmHWM") - start_mb


# ---- methods -------------------------------------------------------------------------------------

def run_ours(texts: list[str], p: MinHashParams, batch: int) -> dict:
    mem = reset_peak()
    began, cpu = time.perf_counter(), time.process_time()
    index, pairs = LshIndex(p), []
    for i in range(0, len(texts), batch):
        pairs += index.add(None, signatures(texts[i:i + batch], p))
    seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
    return dict(seconds=seconds, cpu=cpu, pairs={(a, b) for a, b, _ in pairs}, peak=peak_above(mem))


def run_store(texts: list[str], p: MinHashParams) -> dict:
    """Ours as the pipeline runs it: `curation.dedup.dedup_samples` on a DuckDB store (signatures and
    LSH bands written to the store, candidates found by a SQL join). Loading the samples is not timed."""
    import tempfile

    from curation.dedup import DedupParams, dedup_samples
    from store.store import Store
    from prompts.rows import PromptRow

    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "bench.duckdb") as store:
        store.add_prompts([PromptRow(id="p0", source="bench", task="bench", input="-", gold="", split="train")], "bench")
        ids = [f"s{i:08d}" for i in range(len(texts))]
        store.add_requests_and_samples(
            [dict(key=f"k{i}", model="bench", prompt_id="p0", status="done") for i in range(len(texts))],
            [dict(id=sid, prompt_id="p0", request_key=f"k{i}", teacher="bench", kind="cot", reasoning=t, answer=None)
             for i, (sid, t) in enumerate(zip(ids, texts))])
        mem = reset_peak()
        began, cpu = time.perf_counter(), time.process_time()
        dedup_samples(store, "bench", "bench", DedupParams(p, scope="pool"))
        seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
        clusters: dict[str, list[int]] = {}
        for r in store.query("SELECT sample_id, cluster_id FROM dedup WHERE method = 'minhash'"):
            clusters.setdefault(r["cluster_id"], []).append(int(r["sample_id"][1:]))
    pairs = {(a, b) for members in clusters.values() for a in members for b in members if a < b}
    return dict(seconds=seconds, cpu=cpu, pairs=pairs, peak=peak_above(mem))


def run_datasketch(texts: list[str], p: MinHashParams) -> tuple[dict, dict]:
    from datasketch import MinHash, MinHashLSH
    mem = reset_peak()
    began, cpu = time.perf_counter(), time.process_time()
    lsh, hashes, pairs = MinHashLSH(threshold=p.threshold, num_perm=p.num_perm), [], set()
    for i, text in enumerate(texts):
        m = MinHash(num_perm=p.num_perm, seed=p.seed)
        m.update_batch(shingles(text, p))
        pairs.update((j, i) for j in lsh.query(m))
        lsh.insert(i, m)
        hashes.append(m.hashvalues)  # kept for the +verify row only (MinHash.jaccard is this mean)
    plain = dict(seconds=time.perf_counter() - began, cpu=time.process_time() - cpu, pairs=pairs, peak=peak_above(mem))
    verified = {(a, b) for a, b in pairs if np.mean(hashes[a] == hashes[b]) >= p.threshold}
    return plain, dict(seconds=time.perf_counter() - began, cpu=time.process_time() - cpu, pairs=verified,
                       peak=peak_above(mem))


DISTILABEL_CHILD = r"""
import json, logging, sys, time, warnings
from pathlib import Path
from types import SimpleNamespace
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
from distilabel.steps import MinHashDedup

texts_path, params, batch, warmup = sys.argv[1], SimpleNamespace(**json.loads(sys.argv[2])), int(sys.argv[3]), int(sys.argv[4])
texts = json.load(open(texts_path))

def dedup(texts):
    step = MinHashDedup(threshold=params.threshold, num_perm=params.num_perm, seed=params.seed, storage="dict")
    step.load()
    step._tokenizer = lambda docs: [shingles(d, params) for d in docs]  # the same shingles as the others
    keep = []
    for i in range(0, len(texts), batch):
        rows = next(step.process([{"text": t} for t in texts[i:i + batch]]))
        keep += [r["keep_row_after_minhash_filtering"] for r in rows]
    return keep

def status(field):
    return next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith(field))

dedup(texts[:warmup])  # untimed, as for the other methods
try:
    Path("/proc/self/clear_refs").write_text("5")
except OSError:
    pass
mem = status("VmRSS")
began, cpu = time.perf_counter(), time.process_time()
keep = dedup(texts)
seconds, cpu = time.perf_counter() - began, time.process_time() - cpu
print(json.dumps(dict(seconds=seconds, cpu=cpu, keep=keep, peak=status("VmHWM") - mem)))
"""


def run_distilabel(python: str, texts: list[str], p: MinHashParams) -> dict:
    # The child gets this file's normalise() and shingles() as source: same shingling, no imports
    # from this repo, no datasketch 2 (distilabel 1.5.3 needs datasketch < 1.8).
    patterns = f"_PUNCT, _SPACES = re.compile({minhash._PUNCT.pattern!r}), re.compile({minhash._SPACES.pattern!r})\n"
    code = ("from __future__ import annotations\nimport re\n" + patterns + inspect.getsource(normalise) + "\n"
            + inspect.getsource(shingles) + DISTILABEL_CHILD)
    params = dict(shingle=p.shingle, ngram=p.ngram, threshold=p.threshold, num_perm=p.num_perm, seed=p.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "texts.json"
        path.write_text(json.dumps(texts))
        proc = subprocess.run([python, "-c", code, str(path), json.dumps(params), "1000", str(WARMUP)],
                              capture_output=True, text=True, cwd=tmp)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"exited with {proc.returncode}: {tail}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    return dict(seconds=res["seconds"], cpu=res["cpu"], dropped={i for i, k in enumerate(res["keep"]) if not k}, peak=res["peak"])


# ---- scoring and output --------------------------------------------------------------------------

def versions(distilabel_python: str | None) -> str:
    from importlib.metadata import version
    line = (f"Python {platform.python_version()}, numpy {version('numpy')}, datasketch {version('datasketch')}; "
            f"{os.cpu_count()} CPUs, each method on one core")
    if distilabel_python:
        code = "from importlib.metadata import version as v; print(v('distilabel'), v('datasketch'))"
        got = subprocess.run([distilabel_python, "-c", code], capture_output=True, text=True).stdout.split()
        if len(got) == 2:
            line += f"; distilabel {got[0]} (its venv: datasketch {got[1]})"
    return line


def million(n: int, p: MinHashParams, block: int, seed: int) -> int:
    """Ours alone, a block at a time: only the index stays in memory, never the whole corpus.

    Reported pairs are checked exactly against the texts of the current and previous block (where
    every planted original lives); a pair reaching further back is counted as a false positive."""
    index = LshIndex(p)
    seconds = cpu = docs = reported = correct = planted_true = planted_found = 0
    prev_start, prev_texts = 0, []
    mem = reset_peak()
    for start, texts, plants in blocks(n, block, p, seed):
        began, cpu_began = time.perf_counter(), time.process_time()
        pairs = index.add(range(start, start + len(texts)), signatures(texts, p))
        seconds, cpu = seconds + time.perf_counter() - began, cpu + time.process_time() - cpu_began
        docs += len(texts)
        true_plants = {(a, b) for a, b, _, j in plants if j >= p.threshold}
        planted_true += len(true_plants)
        for a, b, _ in pairs:
            reported += 1
            if (a, b) in true_plants:
                planted_found += 1
            elif a >= prev_start:
                text_a = prev_texts[a - prev_start] if a < start else texts[a - start]
                correct += jaccard(shingles(text_a, p), shingles(texts[b - start], p)) >= p.threshold
        prev_start, prev_texts = start, texts
        if docs % (10 * block) == 0 or docs == n:
            print(f"  {docs:>9,d} docs  {docs / seconds:7,.0f} docs/s  peak RSS +{peak_above(mem):,.0f} MB",
                  file=sys.stderr, flush=True)
    correct += planted_found
    extra = correct - planted_found  # true pairs nobody planted: they join the ground truth
    print(f"\nours alone on {docs:,d} docs ({p.shingle} {p.ngram}-grams, num_perm {p.num_perm}, threshold "
          f"{p.threshold}, bands x rows {p.resolved()}, batches of {block:,d}); {versions(None)}\n")
    print("| docs | seconds | CPU s | docs/s | pairs reported | true pairs | pair precision | pair recall | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {docs:,d} | {seconds:.1f} | {cpu:.1f} | {docs / seconds:,.0f} | {reported:,d} | {planted_true + extra:,d} | "
          f"{correct / max(reported, 1):.3f} | {(planted_found + extra) / max(planted_true + extra, 1):.3f} | "
          f"+{peak_above(mem):,.0f} (process {_status('VmHWM'):,.0f}) |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="4,000 docs")
    parser.add_argument("--million", action="store_true", help="ours alone on 1,000,000 docs")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--ngram", type=int, default=5)
    parser.add_argument("--shingle", choices=("word", "char"), default="word")
    parser.add_argument("--batch", type=int, default=10_000, help="docs per signatures() + LshIndex.add call")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed")
    parser.add_argument("--no-store", action="store_true", help="skip the row of dedup_samples on a DuckDB store")
    parser.add_argument("--distilabel-python", default="/tmp/venv-distilabel/bin/python")
    args = parser.parse_args()
    p = MinHashParams(shingle=args.shingle, ngram=args.ngram, num_perm=128, threshold=args.threshold)
    if args.million:
        return million(1_000_000, p, args.batch, args.seed)

    n = 4_000 if args.quick else args.docs
    texts, planted = [], []
    began = time.perf_counter()
    for _, block_texts, block_planted in blocks(n, max(n // 10, 1), p, args.seed):
        texts += block_texts
        planted += block_planted
    print(f"corpus: {n:,d} docs, {len(planted)} planted pairs ({time.perf_counter() - began:.1f} s)",
          file=sys.stderr, flush=True)

    results: dict[str, dict] = {}
    print("  ours ...", file=sys.stderr, flush=True)
    run_ours(texts[:WARMUP], p, args.batch)  # first calls pay for imports, caches, page faults
    results["ours"] = run_ours(texts, p, args.batch)
    if not args.no_store:
        print("  ours via the store ...", file=sys.stderr, flush=True)
        results["ours via the store"] = run_store(texts, p)
    print("  datasketch ...", file=sys.stderr, flush=True)
    run_datasketch(texts[:WARMUP], p)
    results["datasketch"], results["datasketch+verify"] = run_datasketch(texts, p)
    dl_python = args.distilabel_python if Path(args.distilabel_python).exists() else None
    dl_note = "" if dl_python else f"distilabel: not installed ({args.distilabel_python} missing)"
    if dl_python:
        print("  distilabel ...", file=sys.stderr, flush=True)
        try:
            results["distilabel"] = run_distilabel(dl_python, texts, p)
        except RuntimeError as exc:  # distilabel failing must not lose the other numbers
            dl_note = f"distilabel: failed ({exc})"
    if dl_note:
        print(dl_note, file=sys.stderr)

    # Ground truth: planted pairs at or above the threshold, plus any reported pair that is.
    truth = {(a, b) for a, b, _, j in planted if j >= p.threshold}
    cache: dict[int, set] = {}
    for res in results.values():
        for a, b in res.get("pairs", ()):
            if (a, b) not in truth:
                sa, sb = (cache.setdefault(i, shingles(texts[i], p)) for i in (a, b))
                if jaccard(sa, sb) >= p.threshold:
                    truth.add((a, b))
    true_dropped = {b for _, b in truth}

    base_rate = n / results["datasketch"]["seconds"]
    print(f"\n{n:,d} docs of ~{DOC_WORDS} words, {len(planted)} planted pairs, {len(truth)} true pairs "
          f"(exact Jaccard >= {p.threshold}); {p.shingle} {p.ngram}-grams, num_perm {p.num_perm}, "
          f"bands x rows {p.resolved()}")
    print(versions(dl_python) + (f"\n{dl_note}" if dl_note else "") + "\n")
    print("| method | docs | seconds | CPU s | docs/s | vs datasketch | pairs | pair precision | pair recall | "
          "dup-doc precision | dup-doc recall | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, res in results.items():
        rate = n / res["seconds"]
        if "pairs" in res:
            hit = len(res["pairs"] & truth)
            pairs = f"{len(res['pairs'])} | {hit / max(len(res['pairs']), 1):.3f} | {hit / max(len(truth), 1):.3f}"
            res["dropped"] = {b for _, b in res["pairs"]}
        else:
            pairs = "n/a | n/a | n/a"
        hit = len(res["dropped"] & true_dropped)
        print(f"| {name} | {n:,d} | {res['seconds']:.2f} | {res['cpu']:.2f} | {rate:,.0f} | {rate / base_rate:.1f}x | {pairs} | "
              f"{hit / max(len(res['dropped']), 1):.3f} | {hit / max(len(true_dropped), 1):.3f} | +{res['peak']:.0f} |")

    # Detection by planted level: the LSH S-curve. Below the threshold, reporting is a false positive.
    print(f"\nshare of planted pairs reported, by planted level (threshold {p.threshold}; distilabel: copy dropped)\n")
    print("| level | pairs | exact J | " + " | ".join(results) + " |")
    print("|---|---|---|" + "---|" * len(results))
    for level in LEVELS:
        at = [(a, b, j) for a, b, lv, j in planted if lv == level]
        if not at:
            continue
        shares = [sum(((a, b) in res["pairs"]) if "pairs" in res else (b in res["dropped"]) for a, b, _ in at) / len(at)
                  for res in results.values()]
        print(f"| {level} | {len(at)} | {np.mean([j for *_, j in at]):.3f} | " + " | ".join(f"{s:.2f}" for s in shares) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
