"""Every bad input is refused up front: one `error:` line naming the problem, exit 2, store unchanged.

Each row is a command line a user could type (the flag and a value that cannot work). The store is
compared table by table before and after, so a refusal that came after a write fails the test.
"""
from __future__ import annotations

import hashlib
import json

import pytest

from distill.cli import main
from store.store import Store

# (flag, bad values) for each command; every combination is one case.
SYNTH = [("--limit", ["0", "-1", "abc", "1.5"]), ("--samples", ["0", "-2", "x"]),
         ("--temperature", ["-1", "nan", "inf", "9", "hot"]), ("--max-new-tokens", ["0", "-5", "many"]),
         ("--examples", ["-1", "two"]), ("--batch-size", ["0", "-1"]), ("--max-concurrency", ["0", "-3"]),
         ("--rpm", ["0", "-1", "nan"]), ("--tpm", ["0", "-10"]), ("--max-budget-usd", ["-1", "nan", "inf"]),
         ("--batch-poll-s", ["0", "-1"]), ("--max-retries", ["-1", "x"]), ("--retry-base-s", ["0", "-1", "nan"]),
         ("--workers", ["0", "-1", "x"]), ("--executor", ["spark"]), ("--max-per-replica", ["0", "-1", "x"]),
         ("--price", ["-1,1", "1,-1", "a,b", "1", "nan,1", "inf,0"]),
         ("--split", ["validation"]), ("--kind", ["poem"]), ("--seed", ["x"])]
CURATE = [("--threshold", ["0", "1.5", "-0.1", "nan"]), ("--ngram", ["0", "-1", "x"]), ("--num-perm", ["0", "8", "-1"]),
          ("--embedding-threshold", ["1.5", "0", "-1"]), ("--scope", ["bogus"]), ("--export", ["csv"]),
          ("--out", ["{tmp}", "/proc/x.jsonl", "/sys/x.jsonl", "{tmp}/file.txt/x.jsonl"])]
PAIRS = [("--margin", ["-1", "nan"]), ("--strategy", ["random"]), ("--out", ["{tmp}", "/proc/pairs.jsonl"])]
EVAL = [("--target-accuracy", ["1.5", "-0.1"]), ("--max-teacher-share", ["2", "-1"]), ("--delta", ["0.1"]),
        ("--signal", ["vibes"]), ("--calibration", ["magic"]), ("--price", ["gemma", "=0.5", "gemma=-1", "gemma=x"]),
        ("--max-cost-per-1k", ["1", "-1"]), ("--prompt-style", ["qa"]), ("--debias", ["prior"]), ("--shots", ["x", "-1"]),
        ("--limit", ["0", "5", "x"]), ("--variants", ["0"]), ("--kd-train", ["5"]), ("--rationales", ["-1"]),
        ("--resplits", ["-1"]), ("--device", ["bogus", "gpu", "cuda:x"])]
# Files a user might load: each is written by the `seeded` fixture.
BAD_FILES = {"latin1.jsonl": b'{"input": "caf\xe9", "label": "x"}\n', "surrogate.jsonl": b'{"input": "\\ud800", "label": "x"}\n',
             "empty.jsonl": b"", "list.jsonl": b"[1, 2]\n", "broken.jsonl": b'{"input": \n',
             "nolabel.jsonl": b'{"input": "q"}\n', "badchoice.jsonl": b'{"input": "q", "label": "c", "choices": ["a", "b"]}\n',
             "garbage.parquet": b"not parquet", "table.txt": b"input,label\nq,a\n",
             "dupid.jsonl": b'{"id": "1", "input": "q", "label": "a"}\n{"id": "1", "input": "r", "label": "b"}\n'}
SERVE = [["--port", "-1"], ["--port", "99999"], ["--latency", "-1"], ["--max-batch", "0"], ["--faults", "bogus:1"],
         ["--max-body-mb", "0"], ["--max-choices", "0"], ["--api-key-env", "NO_SUCH_VARIABLE_SET"],
         ["--host", "0.0.0.0"], ["--batch-wait-ms", "-1"], ["--device", "bogus"], ["--device", "cuda:"]]
SERVE_LIKE = [["synth", "--pool", "yesno"], ["synth"], ["curate", "--pool", "yesno", "--verifiers", "magic"],
              ["curate", "--pool", "no-such-pool"], ["pairs"], ["eval"], ["eval", "--student", "s"],
              ["train", "sft"], ["train", "nosuch"], ["data", "load"], ["data", "list", "gsm8k"], ["nosuch"],
              ["synth", "--pool", "yesno", "--teacher", "no-such-model"],
              ["synth", "--pool", "yesno", "--kind", "critique"],
              ["synth", "--pool", "yesno", "--teacher", "api:openai/echo", "--api-base", "http://127.0.0.1:9/v1",
               "--max-per-replica", "2"],  # a cap per replica needs several replicas
              ["eval", "cascade", "--task", "no-such-task", "--student", "tiny-random", "--teacher", "tiny-random"],
              ["data", "load", "no-such-task"], ["data", "load", "{tmp}/missing.jsonl"],
              ["data", "load", "{tmp}/again.jsonl", "--pool", "second"]]  # rows already in pool yesno

CASES = (
    [pytest.param(["synth", "--pool", "yesno", "--teacher", "tiny-random", flag, v], id=f"synth {flag} {v}")
     for flag, values in SYNTH for v in values]
    + [pytest.param(["curate", "--pool", "yesno", flag, v], id=f"curate {flag} {v}") for flag, values in CURATE
       for v in values]
    + [pytest.param(["pairs", "--pool", "yesno", flag, v], id=f"pairs {flag} {v}") for flag, values in PAIRS
       for v in values]
    + [pytest.param(["eval", "cascade", "--task", "yesno", "--student", "tiny-random", "--teacher", "tiny-random",
                     flag, v], id=f"eval {flag} {v}") for flag, values in EVAL for v in values]
    + [pytest.param(argv, id=" ".join(argv)) for argv in SERVE_LIKE]
    + [pytest.param(["data", "load", "{tmp}/" + name, "--pool", "mine"], id=f"data load {name}") for name in BAD_FILES]
    + [pytest.param(["serve", "--model", "echo", *flags], id="serve " + " ".join(flags)) for flags in SERVE]
    + [pytest.param(["demo", "--set", kv], id=f"demo --set {kv}") for kv in ("nosuch=1", "samples=x", "samples")]
)


@pytest.fixture
def seeded(tmp_path, rows):
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        store.add_prompts(rows, "yesno")
    (tmp_path / "file.txt").write_text("not a folder")
    for name, data in BAD_FILES.items():
        (tmp_path / name).write_bytes(data)
    with Store(path, read_only=True) as store:  # the seeded rows again, as a file, for a second pool
        again = [{"id": r["id"], "input": r["input"], "label": r["gold"]} for r in store.query("SELECT * FROM prompts")]
    (tmp_path / "again.jsonl").write_text("".join(json.dumps(r) + "\n" for r in again))
    return path


def _digest(path) -> dict[str, str]:
    with Store(path, read_only=True) as store:
        tables = [r["table_name"] for r in store.query("SELECT table_name FROM information_schema.tables")]
        return {t: hashlib.sha256(str(store.query(f"SELECT * FROM {t} ORDER BY ALL")).encode()).hexdigest()
                for t in tables}


@pytest.mark.parametrize("argv", CASES)
def test_bad_input_is_one_line_exit_2_store_unchanged(argv, seeded, tmp_path, capsys):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    before = _digest(seeded)
    try:
        takes_store = argv[0] in ("synth", "curate", "pairs", "eval", "data") or argv[:2] == ["demo", "--set"]
        code = main([*argv, "--store", str(seeded)] if takes_store and argv[0] != "demo" else argv)
    except SystemExit as stop:  # argparse refuses before main's own handling
        code = stop.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "Traceback" not in err[0]
    assert _digest(seeded) == before


def test_there_are_over_120_cases():
    assert len(CASES) >= 120


# ---- the Python API refuses the same values, before touching the store ------------------------------

def _api_cases():
    from curation.decontam import decontaminate
    from curation.dedup import DedupParams
    from curation.minhash import MinHashParams
    from evals.settings import CascadeSettings
    from prompts.data import load_task
    from synth.kinds import SynthSettings, run_kind
    return {
        "load_task(None)": lambda store: load_task(None),
        "load_task('')": lambda store: load_task(""),
        "MinHash ngram 0": lambda store: MinHashParams(ngram=0),
        "MinHash num_perm 0": lambda store: MinHashParams(num_perm=0),
        "MinHash threshold 1.5": lambda store: MinHashParams(threshold=1.5),
        "MinHash shingle 'byte'": lambda store: MinHashParams(shingle="byte"),
        "dedup scope bogus": lambda store: DedupParams(scope="bogus"),
        "decontaminate n=0": lambda store: decontaminate(store, "yesno", "r", n=0),
        "cascade target 1.5": lambda store: CascadeSettings(target_accuracy=1.5).check(),
        "cascade signal vibes": lambda store: CascadeSettings(signal="vibes").check(),
        "cascade delta without target": lambda store: CascadeSettings(delta=0.1).check(),
        "synth settings samples 0": lambda store: SynthSettings(samples=0).check(),
        "synth settings temperature -1": lambda store: SynthSettings(temperature=-1).check(),
        "synth kind poem": lambda store: run_kind("poem", store, None, "yesno", "r"),
    }


@pytest.mark.parametrize("name", list(_api_cases()))
def test_the_python_api_refuses_bad_values_with_the_store_unchanged(name, seeded):
    from core.errors import DistillError
    before = _digest(seeded)
    with Store(seeded) as store, pytest.raises(DistillError) as err:
        _api_cases()[name](store)
    assert "\n" not in str(err.value) and str(err.value)
    assert _digest(seeded) == before
