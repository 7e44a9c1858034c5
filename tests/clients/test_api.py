"""The LiteLLM teacher: rendering, reasoning normalisation, error classes, cost, key hygiene."""
import asyncio
import json

import httpx
import litellm
import pytest

from core.errors import DistillError
from clients.api_errors import ApiError, classify, scrub, split_reasoning
from clients.api import ApiTeacher
from serve.server import start_server

SECRET = "sk-SECRET-123"


@pytest.mark.parametrize("content,reasoning,blocks,text,thought", [
    ("Answer: yes", "I compared densities.", None, "Answer: yes", "I compared densities."),
    ("<think>pears float</think>\nAnswer: no", None, None, "Answer: no", "pears float"),
    ("So <think>a</think> then <think>b</think> Answer: 4", None, None, "So  then  Answer: 4", "a\n\nb"),
    ("the template opened it</think>Answer: 3", None, None, "Answer: 3", "the template opened it"),
    ("<think>cut off by max_tokens", None, None, "", "cut off by max_tokens"),
    ("Answer: 7", None, [{"type": "thinking", "thinking": "7 is prime"}], "Answer: 7", "7 is prime"),
    ("Answer: 7", None, None, "Answer: 7", None),
    (None, "only thoughts", None, "", "only thoughts"),
])
def test_reasoning_is_split_from_the_answer(content, reasoning, blocks, text, thought):
    assert split_reasoning(content, reasoning, blocks) == (text, thought)


def test_render_is_canonical_json_and_round_trips_with_a_suffix():
    teacher = ApiTeacher("t", "openai/echo")
    a = teacher.render([{"role": "user", "content": "Hi é"}])
    b = teacher.render([{"content": "Hi é", "role": "user"}])
    assert a == b == '[{"content":"Hi é","role":"user"}]'
    assert teacher.render("Hi é") == a
    assert teacher.messages(a) == [{"role": "user", "content": "Hi é"}]
    # The CoT stage appends "Reasoning:" to the rendered text: it joins the last user turn.
    assert teacher.messages(a + "Reasoning:") == [{"role": "user", "content": "Hi é\n\nReasoning:"}]
    assert teacher.messages("plain text") == [{"role": "user", "content": "plain text"}]


def test_key_never_in_repr_vars_or_scrubbed_messages(monkeypatch):
    monkeypatch.setenv("MY_KEY", SECRET)
    teacher = ApiTeacher("t", "openai/echo", api_key_env="MY_KEY")
    assert SECRET not in repr(teacher) and SECRET not in str(vars(teacher))
    assert scrub(f"401 for key {SECRET}; headers {{'Authorization': 'Bearer other'}}", SECRET) == \
        "401 for key ***; headers {'Authorization': 'Bearer ***'}"
    monkeypatch.delenv("MY_KEY")
    with pytest.raises(DistillError, match="MY_KEY is not set"):
        ApiTeacher("t", "openai/echo", api_key_env="MY_KEY")


def _response(status: int, headers: dict | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=httpx.Request("POST", "http://x/v1/chat/completions"))


def test_classify_litellm_exceptions():
    rate = litellm.RateLimitError(f"slow down {SECRET}", "openai", "m", response=_response(429))
    rate.litellm_response_headers = httpx.Headers({"retry-after": "7"})  # where litellm 1.106 keeps them
    got = classify(rate, SECRET)
    assert (got.kind, got.retry_after, got.retryable) == ("rate_limit", 7.0, True)
    assert SECRET not in got.message and SECRET not in str(got)
    cases = [
        (litellm.InternalServerError("boom", "openai", "m"), "server_error"),
        (litellm.InternalServerError("OpenAIException - Expecting value: line 1 column 9", "openai", "m"), "malformed"),
        (litellm.InternalServerError("OpenAIException - Connection error.", "openai", "m"), "connection"),
        (litellm.Timeout("timed out", "m", "openai"), "timeout"),
        (litellm.APIConnectionError("refused", "openai", "m"), "connection"),
        (litellm.BadRequestError("bad", "m", "openai"), "bad_request"),
        (litellm.NotFoundError("no such model", "m", "openai"), "bad_request"),
        (litellm.AuthenticationError("bad key", "openai", "m"), "auth"),
        (json.JSONDecodeError("x", "doc", 0), "malformed"),
    ]
    for exc, kind in cases:
        assert classify(exc).kind == kind, (exc, kind)
    assert not classify(litellm.BadRequestError("bad", "m", "openai")).retryable


def test_cost_from_price_table_and_zero_for_unknown_models():
    priced = ApiTeacher("t", "openai/my-local-model", price_per_mtok=(1.0, 2.0))
    assert priced.price_per_token() == (1e-6, 2e-6)
    assert priced.cost(None, 1000, 500) == pytest.approx(0.002)
    unknown = ApiTeacher("t", "openai/my-local-model")
    assert unknown.price_per_token() is None and unknown.cost(object(), 1000, 500) == 0.0
    known = ApiTeacher("t", "gpt-4o-mini")  # litellm's bundled price map (no network)
    assert known.price_per_token() is not None and known.price_per_token()[0] > 0


def test_agenerate_over_real_http_and_error_classes():
    teacher = ApiTeacher("echo", "openai/echo", api_key=SECRET, price_per_mtok=(1.0, 1.0), timeout_s=0.5)
    rendered = teacher.render([{"role": "user", "content": "is the sun a star"}])
    with start_server("echo", faults="429@2;500@3;malformed@4;timeout@5;drop@6") as server:
        teacher.api_base = server.url

        async def call() -> object:
            try:
                return await teacher.agenerate(rendered, max_new_tokens=32, temperature=0.0, stop=[], seed=1)
            except ApiError as err:
                return err
        results = [asyncio.run(call()) for _ in range(6)]
    gen = results[0]
    assert gen.text == "echo: is the sun a star" and gen.finish_reason == "stop"
    assert gen.prompt_tokens > 0 and gen.completion_tokens > 0 and gen.cost_usd > 0
    assert [r.kind for r in results[1:]] == ["rate_limit", "server_error", "malformed", "timeout", "connection"]
    assert results[1].retry_after == 1.0
    assert all(SECRET not in str(r) for r in results[1:])


@pytest.mark.parametrize("direct", [True, False], ids=["direct-post", "litellm"])
def test_the_openai_key_goes_only_to_openai_unless_named(monkeypatch, direct):
    """A custom api_base never receives OPENAI_API_KEY from the environment: only a key named for it."""
    from serve.server import ServeGuard

    monkeypatch.setenv("OPENAI_API_KEY", "sk-users-openai-key-0123")
    monkeypatch.setenv("LOCAL_KEY", "sk-users-openai-key-0123")
    extra = {} if direct else {"extra_params": {"top_p": 1.0}}  # extra params route through litellm
    rendered = json.dumps([{"role": "user", "content": "hi"}])
    with start_server("echo", guard=ServeGuard(api_key="sk-users-openai-key-0123")) as server:
        unnamed = ApiTeacher("t", "openai/echo", api_base=server.url, timeout_s=10, **extra)
        assert unnamed.direct is direct and unnamed.secret() is None
        with pytest.raises(ApiError) as err:  # the server sees no key: 401
            asyncio.run(unnamed.agenerate(rendered, max_new_tokens=8, temperature=0.0, stop=[], seed=1))
        assert "0123" not in str(err.value)
        named = ApiTeacher("t", "openai/echo", api_base=server.url, api_key_env="LOCAL_KEY", timeout_s=10, **extra)
        gen = asyncio.run(named.agenerate(rendered, max_new_tokens=8, temperature=0.0, stop=[], seed=1))
        assert gen.text == "echo: hi"
    assert ApiTeacher("t", "gpt-4o-mini").secret() == "sk-users-openai-key-0123"  # OpenAI's own endpoint
