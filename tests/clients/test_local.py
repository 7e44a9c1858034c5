"""LocalGenerator: fast tests on tiny-random (random weights, so texts are gibberish but
deterministic); real-model generation is marked slow."""

import pytest
import torch

from clients.types import Generation
from clients.local import LocalGenerator

CHAT = [{"role": "user", "content": "What is 2 + 2?"}]
PROMPTS = ["12 + 7 =", "The capital of France is a city called", "a", "Please answer the question."]


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILL_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield LocalGenerator("tiny-random", batch_size=3)


def texts(results):
    return [[g.text for g in row] for row in results]


def test_render(gen):
    assert gen.render("raw completion prompt") == "raw completion prompt"
    chat = gen.render(CHAT)
    assert "<|im_start|>user\nWhat is 2 + 2?<|im_end|>" in chat and chat.endswith("<|im_start|>assistant\n")


def test_render_base_model_without_template(gen, monkeypatch):
    monkeypatch.setattr(gen.tokenizer, "chat_template", None)
    messages = [{"role": "system", "content": "Be brief."}, *CHAT]
    assert gen.render(messages) == "Be brief.\nUser: What is 2 + 2?\nAssistant:"


def test_generate_shapes_and_fields(gen):
    prompts = PROMPTS + [gen.render(CHAT)]
    out = gen.generate(prompts, max_new_tokens=8, num_samples=2)
    assert len(out) == len(prompts) and all(len(row) == 2 for row in out)
    for prompt, row in zip(prompts, out):
        g = row[0]
        assert isinstance(g, Generation) and row[0] == row[1] and row[0] is not row[1]
        assert g.prompt_tokens == len(gen.tokenizer(prompt)["input_ids"])
        assert g.finish_reason in ("stop", "length")
        assert 0 < g.completion_tokens <= 8
        assert len(g.token_logprobs) == len(g.top2_margins) == g.completion_tokens
        assert all(lp <= 0 for lp in g.token_logprobs) and all(m >= 0 for m in g.top2_margins)


def test_greedy_is_deterministic_and_padding_free(gen):
    batched = gen.generate(PROMPTS, max_new_tokens=10)
    assert texts(batched) == texts(gen.generate(PROMPTS, max_new_tokens=10))
    # batch_size=3 with 4 prompts of different lengths: left padding must not change greedy text.
    for prompt, row in zip(PROMPTS, batched):
        alone = gen.generate([prompt], max_new_tokens=10)[0][0]
        assert alone.text == row[0].text
        assert alone.token_logprobs == pytest.approx(row[0].token_logprobs, abs=1e-4)


def test_logprobs_match_a_teacher_forced_forward(gen, monkeypatch):
    prompt = PROMPTS[1]
    outputs = []
    real_generate = gen.model.generate
    monkeypatch.setattr(gen.model, "generate", lambda *a, **k: outputs.append(real_generate(*a, **k)) or outputs[-1])
    g = gen.generate([prompt], max_new_tokens=6)[0][0]
    assert g.finish_reason == "length" and g.completion_tokens == 6  # eos unlikely in 6 random steps
    ids = outputs[0]  # prompt + the 6 generated ids, exactly as generated (no re-tokenization)
    with torch.no_grad():
        lp = torch.log_softmax(gen.model(ids).logits[0].float(), -1)
    start = ids.shape[1] - 6
    expected = [float(lp[start - 1 + k, ids[0, start + k]]) for k in range(6)]
    assert g.token_logprobs == pytest.approx(expected, abs=1e-4)
    top2 = lp[start - 1 : start + 5].topk(2, dim=-1).values
    assert g.top2_margins == pytest.approx((top2[:, 0] - top2[:, 1]).tolist(), abs=1e-4)


def test_sampling_reproducible_with_seed(gen):
    a = gen.generate(PROMPTS, max_new_tokens=10, temperature=1.0, num_samples=3, seed=7)
    b = gen.generate(PROMPTS, max_new_tokens=10, temperature=1.0, num_samples=3, seed=7)
    c = gen.generate(PROMPTS, max_new_tokens=10, temperature=1.0, num_samples=3, seed=8)
    assert texts(a) == texts(b)
    assert texts(a) != texts(c)
    assert all(len(set(row)) > 1 for row in texts(a))  # samples of one prompt differ
    state = torch.get_rng_state()
    gen.generate(PROMPTS[:1], max_new_tokens=3, temperature=1.0)
    assert torch.equal(state, torch.get_rng_state())  # caller's RNG untouched


def test_stop_string_cuts_text_and_stops_early(gen, monkeypatch):
    prompt = PROMPTS[1]
    full = gen.generate([prompt], max_new_tokens=20)[0][0]
    assert len(full.text) > 6
    stop = full.text[4:6]
    cut_at = full.text.find(stop)
    steps = []
    real_generate = gen.model.generate

    def spy(*args, **kwargs):
        out = real_generate(*args, **kwargs)
        steps.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    monkeypatch.setattr(gen.model, "generate", spy)
    g = gen.generate([prompt], max_new_tokens=20, stop=["never-produced", stop])[0][0]
    assert g.text == full.text[:cut_at]
    assert g.finish_reason == "stop"
    assert g.completion_tokens < full.completion_tokens
    assert len(g.token_logprobs) == g.completion_tokens
    assert g.token_logprobs == full.token_logprobs[: g.completion_tokens]
    assert steps[0] < 20  # generation itself halted, not only the text was cut


def test_eos_finishes_with_stop(gen, monkeypatch):
    prompt = PROMPTS[0]
    full = gen.generate([prompt], max_new_tokens=8)[0][0]
    ids = gen.tokenizer(full.text, add_special_tokens=False)["input_ids"]
    # Pretend the model's 3rd generated token is its eos token.
    full_ids = gen.generate([prompt], max_new_tokens=3)[0][0]
    fake_eos = gen.tokenizer(full_ids.text, add_special_tokens=False)["input_ids"][-1]
    if fake_eos in ids[:2]:
        pytest.skip("random model repeats the token early")
    monkeypatch.setattr(gen, "eos_ids", [fake_eos])
    monkeypatch.setattr(gen.model.generation_config, "eos_token_id", [fake_eos])
    g = gen.generate([prompt], max_new_tokens=8)[0][0]
    assert g.finish_reason == "stop" and g.completion_tokens == 2


def test_score_continuations_matches_manual_computation(gen):
    prompt = PROMPTS[1]
    likely = gen.generate([prompt], max_new_tokens=4)[0][0].text
    options = [likely, " 12 zebra quantum", ""]
    scores = gen.score_continuations(prompt, options)
    assert scores[2] == 0.0
    head = gen.tokenizer(prompt)["input_ids"]
    for option, score in zip(options[:2], scores):
        tail = gen.tokenizer(option, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(gen.model(torch.tensor([head + tail])).logits[0].float(), -1)
        manual = sum(float(lp[len(head) - 1 + k, t]) for k, t in enumerate(tail))
        assert score == pytest.approx(manual, abs=1e-3)
    assert scores[0] > scores[1]  # the model's own greedy text beats an arbitrary one


def test_continuation_details_shared_prompt_pass_matches_full_sequences(gen):
    """Options of different lengths scored from one cached prompt pass give the same per-token
    log-probs and top-2 margins as scoring each full sequence on its own."""
    prompt = PROMPTS[1]
    options = [" 12 zebra quantum", " 7", " quantum 12"]
    details = gen.continuation_details(prompt, options)
    head = gen.tokenizer(prompt)["input_ids"]
    for option, d in zip(options, details):
        tail = gen.tokenizer(option, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            lp = torch.log_softmax(gen.model(torch.tensor([head + tail])).logits[0].float(), -1)
        rows = lp[len(head) - 1: len(head) - 1 + len(tail)]
        top2 = rows.topk(2, dim=-1).values
        assert d["token_logprobs"] == pytest.approx([float(rows[k, t]) for k, t in enumerate(tail)], abs=1e-4)
        assert d["top2_margins"] == pytest.approx((top2[:, 0] - top2[:, 1]).tolist(), abs=1e-4)
    tails = [gen.tokenizer(o, add_special_tokens=False)["input_ids"] for o in options]
    joint = gen._details_joint(head, tails)
    assert [d["token_logprobs"] for d in joint] == [pytest.approx(d["token_logprobs"], abs=1e-4) for d in details]


def test_progress_bar_on_stderr(gen, capsys):
    gen.generate(PROMPTS, max_new_tokens=2, num_samples=2, progress="teaching")
    err = capsys.readouterr().err
    assert "teaching" in err and "8/8" in err and "seq" in err


# ---- real models: slow ------------------------------------------------------------------------


@pytest.mark.slow
def test_gemma_completes_few_shot_prompt(machine_cache):
    g = LocalGenerator("gemma-3-270m")
    prompt = "Q: What is the capital of Italy?\nA: Rome\nQ: What is the capital of France?\nA:"
    out = g.generate([prompt, "The capital of France is"], max_new_tokens=12, stop=["\n"])
    assert "Paris" in out[0][0].text and out[0][0].finish_reason == "stop"
    assert out[1][0].text.strip()
    paris, london = g.score_continuations("The capital of France is", [" Paris", " London"])
    assert paris > london


@pytest.mark.slow
def test_smollm_answers_a_chat_message(machine_cache):
    g = LocalGenerator("smollm2-135m-instruct")
    out = g.generate([g.render([{"role": "user", "content": "What is the capital of France?"}])], max_new_tokens=24)
    answer = out[0][0]
    assert "Paris" in answer.text and answer.finish_reason == "stop"  # ends its turn with <|im_end|>
    assert "<|im_end|>" not in answer.text


def test_top_k_alternatives_hold_the_chosen_token_under_greedy(gen):
    [[out]] = gen.generate([gen.render("hello there")], max_new_tokens=6, top_k=3)
    assert len(out.top_logprobs) == out.completion_tokens == len(out.token_ids) > 0
    for chosen, alternatives, lp in zip(out.token_ids, out.top_logprobs, out.token_logprobs):
        ids = [i for i, _ in alternatives]
        assert len(alternatives) == 3 and ids[0] == chosen  # greedy picks the top-1 token
        assert abs(alternatives[0][1] - lp) < 1e-5
        assert [v for _, v in alternatives] == sorted((v for _, v in alternatives), reverse=True)


# ---- batched option scoring -------------------------------------------------------------------

BATCH_ITEMS = [
    ("12 + 7 =", [" 19", " 12 zebra quantum", " 7"]),
    ("The capital of France is a city called", [" Paris", " London town"]),
    ("a", [" b"]),
    ("Please answer the question.", [" yes", "", " no"]),  # an empty option: the per-item path
    (PROMPTS[1] * 5, [" 3", " 4", " five six seven eight"]),
    ("hi", []),
]


def _close(batched, single, tol=1e-4):
    assert len(batched) == len(single)
    for b, s in zip(batched, single):
        assert set(b) == {"token_logprobs", "top2_margins"}
        assert len(b["token_logprobs"]) == len(s["token_logprobs"]) and len(b["top2_margins"]) == len(s["top2_margins"])
        assert b["token_logprobs"] == pytest.approx(s["token_logprobs"], abs=tol)
        assert b["top2_margins"] == pytest.approx(s["top2_margins"], abs=tol)


@pytest.mark.parametrize("budget", [8, 60, 100_000])  # one item per pass, a few, all at once
def test_continuation_details_batch_matches_the_per_item_path(gen, budget):
    out = gen.continuation_details_batch(BATCH_ITEMS, token_budget=budget)
    assert len(out) == len(BATCH_ITEMS) and out[-1] == []
    for (prompt, options), details in zip(BATCH_ITEMS, out):
        _close(details, gen.continuation_details(prompt, options))


def test_continuation_details_batch_groups_by_budget_and_skips_the_head_for_one_token_options(gen, monkeypatch):
    calls = []
    real = gen.model.forward

    def spy(*args, **kwargs):
        calls.append((kwargs["input_ids"].shape, kwargs.get("logits_to_keep")))
        return real(*args, **kwargs)

    monkeypatch.setattr(gen.model, "forward", spy)
    items = [(f"{i} + {i} is", [" 1", " 2"]) for i in range(6)]
    assert all(len(gen.tokenizer(o, add_special_tokens=False)["input_ids"]) == 1 for o in (" 1", " 2"))
    out = gen.continuation_details_batch(items, token_budget=10_000)
    assert len(calls) == 1 and calls[0][0][0] == 6 and calls[0][1] == 1  # one pass, last position only
    for (prompt, options), details in zip(items, out):
        _close(details, gen.continuation_details(prompt, options))
    calls.clear()
    longest = max(len(gen._encode(p)) for p, _ in items)
    gen.continuation_details_batch(items, token_budget=longest * 4)  # two items (4 option rows) per pass
    assert [shape[0] for shape, _ in calls] == [2, 2, 2]


def test_continuation_details_batch_falls_back_per_item(gen, monkeypatch):
    def no_batch(*args, **kwargs):
        raise NotImplementedError
    monkeypatch.setattr(gen, "_details_batch", no_batch)
    out = gen.continuation_details_batch(BATCH_ITEMS[:3])
    for (prompt, options), details in zip(BATCH_ITEMS, out):
        _close(details, gen.continuation_details(prompt, options), tol=0)


@pytest.mark.slow
def test_smollm_batched_option_scores_match_per_item(machine_cache):
    """Real SmolLM2 in fp32: batched scoring of few-shot prompts of different lengths equals
    scoring each item alone within 1e-4 (per-token log-probs and margins)."""
    g = LocalGenerator("smollm2-135m-instruct")
    shot = "Question: Which gas do plants take in?\nOptions: oxygen; carbon dioxide; helium\nAnswer: carbon dioxide\n\n"
    items = [(shot * (1 + i % 3) + f"Question: What is {i} plus {i + 1}?\nOptions: {2 * i + 1}; {2 * i + 3}; "
              "seven hundred\nAnswer:", [f" {2 * i + 1}", f" {2 * i + 3}", " seven hundred"]) for i in range(6)]
    for (prompt, options), details in zip(items, g.continuation_details_batch(items, token_budget=600)):
        _close(details, g.continuation_details(prompt, options))


def test_a_shared_few_shot_block_runs_once_per_group(gen, monkeypatch):
    shots = "Question: What is 2 + 2?\nAnswer: 4\n\nQuestion: What is 3 + 5?\nAnswer: 8\n\n"
    items = [(shots + f"Question: What is {i} + {i * 3}?\nAnswer:", [f" {4 * i}", " 12 zebra", " 7"])
             for i in range(1, 8)] + [("unrelated " * (i + 1), [" a", " b c"]) for i in range(3)]
    calls = []
    real = gen.model.forward

    def spy(*args, **kwargs):
        calls.append(tuple(kwargs["input_ids"].shape))
        return real(*args, **kwargs)

    monkeypatch.setattr(gen.model, "forward", spy)
    out = gen.continuation_details_batch(items, token_budget=100_000)
    shared = len(gen._encode(shots)) - 2  # the block's tokens, less a boundary token or two
    assert calls[0][0] == 1 and calls[0][1] >= shared  # the block alone, once
    assert calls[1][0] == 7 and calls[1][1] < 20  # then only each item's own tokens
    monkeypatch.undo()
    for (prompt, options), details in zip(items, out):
        _close(details, gen.continuation_details(prompt, options))


def test_cache_name_carries_the_number_format_unless_fp32(gen):
    # Request keys use cache_name (engine.jobs.model_key): bf16 answers get their own cache entries.
    assert gen.cache_name == "tiny-random" and str(gen.dtype) == "torch.float32"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILL_CACHE", str(gen.model.name_or_path).rsplit("/models/", 1)[0])
        bf16 = LocalGenerator("tiny-random", batch_size=3, device="cpu", dtype="bfloat16")
    assert bf16.cache_name == "tiny-random@bfloat16"
