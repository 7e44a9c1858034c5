"""`distill serve`: a real HTTP server on loopback, driven by real clients (httpx, openai, litellm).

Fast tests use the model-free "echo" mode and tiny-random; the real-model check is marked slow.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time

import httpx
import pytest

from core.errors import DistillError
from serve.faults import parse_faults
from serve.cli import main
from serve.server import start_server

# Read by litellm at import: without it litellm fetches its price map from the internet.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

HI = [{"role": "user", "content": "Say something about the sea please"}]


def chat_body(model: str = "echo", **extra) -> dict:
    return {"model": model, "messages": HI, **extra}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DISTILL_CACHE", str(tmp_path_factory.mktemp("cache")))
        # A long batch wait makes "16 concurrent requests share a batch" robust on a busy machine.
        with start_server("tiny-random", batch_wait_ms=100) as handle:
            yield handle


async def post_all(url: str, bodies: list[dict], timeout: float = 60.0) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        return await asyncio.gather(*(client.post(url, json=b) for b in bodies))


# ---- protocol ----------------------------------------------------------------------------------


def test_models_and_echo_chat():
    with start_server("echo") as server:
        assert server.url == f"http://127.0.0.1:{server.port}/v1"
        models = httpx.get(server.url + "/models").json()
        assert [m["id"] for m in models["data"]] == ["echo"] and models["object"] == "list"
        out = httpx.post(server.url + "/chat/completions", json=chat_body(n=2, logprobs=True)).json()
    assert out["object"] == "chat.completion" and out["model"] == "echo"
    assert [c["message"]["content"] for c in out["choices"]] == ["echo: Say something about the sea please"] * 2
    assert out["usage"] == {"prompt_tokens": 6, "completion_tokens": 14, "total_tokens": 20}
    tokens = [t["token"] for t in out["choices"][0]["logprobs"]["content"]]
    assert "".join(tokens) == out["choices"][0]["message"]["content"]


def test_validation_errors_are_openai_shaped():
    with start_server("echo") as server:
        def post(body):
            r = httpx.post(server.url + "/chat/completions", json=body)
            return r.status_code, r.json()["error"]

        status, err = post({"model": "echo", "messages": []})
        assert status == 400 and err["type"] == "invalid_request_error" and err["param"] == "messages"
        assert post(chat_body(temperature=3))[1]["param"] == "temperature"
        assert post(chat_body(max_tokens=0))[1]["param"] == "max_tokens"
        assert post(chat_body(top_logprobs=2))[1]["param"] == "top_logprobs"
        assert post(chat_body(stream=True))[0] == 400
        status, err = post(chat_body(model="gpt-4o"))
        assert status == 404 and err["code"] == "model_not_found"
        r = httpx.post(server.url + "/completions", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]


def test_openai_client_gets_a_real_completion(tiny):
    from openai import OpenAI

    client = OpenAI(base_url=tiny.url, api_key="sk-test", max_retries=0)
    out = client.chat.completions.create(model="tiny-random", messages=HI, max_tokens=6, temperature=0,
                                         logprobs=True, top_logprobs=2)
    choice = out.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length") and 0 < out.usage.completion_tokens <= 6
    assert out.usage.prompt_tokens > 5
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    assert len(choice.logprobs.content) == out.usage.completion_tokens
    assert all(t.logprob <= 0 and t.top_logprobs[0].token == t.token for t in choice.logprobs.content)
    # Real alternatives from the model, best first: two per token, the runner-up less likely.
    assert all(len(t.top_logprobs) == 2 and t.top_logprobs[1].logprob <= t.top_logprobs[0].logprob
               for t in choice.logprobs.content)
    text = client.completions.create(model="tiny-random", prompt="12 + 7 =", max_tokens=4, temperature=0, logprobs=1)
    assert text.choices[0].text and len(text.choices[0].logprobs.token_logprobs) == text.usage.completion_tokens


def test_litellm_completion(tiny):
    import litellm

    litellm.telemetry = False
    out = litellm.completion(model="openai/tiny-random", api_base=tiny.url, api_key="sk-test", messages=HI,
                             max_tokens=5, temperature=0)
    assert out.choices[0].message.content and 0 < out.usage.completion_tokens <= 5


def test_concurrent_requests_are_batched_and_answered_separately(tiny):
    bodies = [chat_body("tiny-random", messages=[{"role": "user", "content": f"question {i}: " + "why " * (i % 4)}],
                        max_tokens=8, temperature=0) for i in range(16)]
    alone = [httpx.post(tiny.url + "/chat/completions", json=b, timeout=60).json() for b in bodies[:4]]
    before = tiny.stats
    together = asyncio.run(post_all(tiny.url + "/chat/completions", bodies))
    after = tiny.stats
    batches = after["batches"] - before["batches"]
    assert after["batched_rows"] - before["batched_rows"] == 16 and batches <= 4
    texts = [r.json()["choices"][0]["message"]["content"] for r in together]
    # Greedy decoding in a padded batch must equal decoding each prompt alone.
    assert texts[:4] == [a["choices"][0]["message"]["content"] for a in alone]
    assert len(set(texts)) > 4  # different prompts, different answers: no mix-ups between rows


# ---- faults ------------------------------------------------------------------------------------


def test_each_fault_kind_as_a_raw_client_sees_it():
    spec = "429@1;500@2;malformed@3;truncate@4;drop@5;timeout@6"
    with start_server("echo", faults=spec) as server, httpx.Client(timeout=5) as client:
        url = server.url + "/chat/completions"
        r = client.post(url, json=chat_body())
        assert r.status_code == 429 and r.headers["Retry-After"] == "1"
        assert r.json()["error"]["code"] == "rate_limit_exceeded"
        r = client.post(url, json=chat_body())
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        r = client.post(url, json=chat_body())
        assert r.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            r.json()
        cut = client.post(url, json=chat_body()).json()["choices"][0]
        assert cut["finish_reason"] == "length" and cut["message"]["content"] == "echo: Say something "  # half of 41 chars
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            client.post(url, json=chat_body())
        with pytest.raises(httpx.ReadTimeout):
            client.post(url, json=chat_body(), timeout=0.3)
        assert client.post(url, json=chat_body()).status_code == 200
        assert server.stats["requests"] == 7
        assert server.stats["faults"] == {k: 1 for k in ("429", "500", "malformed", "truncate", "drop", "timeout")}


def test_explicit_faults_hit_exactly_the_listed_requests():
    with start_server("echo", faults="429@2,5;500@3") as server, httpx.Client() as client:
        codes = [client.post(server.url + "/completions", json={"model": "echo", "prompt": "x"}).status_code
                 for _ in range(6)]
    assert codes == [200, 429, 500, 200, 429, 200]


def test_probabilistic_faults_are_seeded():
    plan = parse_faults("429:0.3,500:0.1", seed=7)
    kinds = [plan.decide(i) for i in range(1, 2001)]
    assert kinds == [parse_faults("429:0.3,500:0.1", seed=7).decide(i) for i in range(1, 2001)]
    assert kinds != [parse_faults("429:0.3,500:0.1", seed=8).decide(i) for i in range(1, 2001)]
    assert 0.25 < kinds.count("429") / 2000 < 0.35 and 0.07 < kinds.count("500") / 2000 < 0.13
    expected = [{"429": 429, "500": 500, None: 200}[plan.decide(i)] for i in range(1, 21)]
    with start_server("echo", faults="429:0.3,500:0.1", seed=7) as server, httpx.Client() as client:
        codes = [client.post(server.url + "/chat/completions", json=chat_body()).status_code for _ in range(20)]
    assert codes == expected


@pytest.mark.parametrize("spec", ["429:2", "teapot:0.1", "429@0", "429:0.6,500:0.6", "429@1;500@1", "429"])
def test_bad_fault_specs_are_one_line_errors(spec):
    with pytest.raises(DistillError, match="bad --faults"):
        parse_faults(spec)


# ---- latency, lifecycle, secrets ---------------------------------------------------------------


def test_latency_per_request_and_concurrency():
    latency = 0.2
    with start_server("echo", latency_s=latency) as server:
        start = time.perf_counter()
        httpx.post(server.url + "/chat/completions", json=chat_body())
        one = time.perf_counter() - start
        start = time.perf_counter()
        responses = asyncio.run(post_all(server.url + "/chat/completions", [chat_body()] * 64))
        many = time.perf_counter() - start
    assert latency <= one < latency + 0.5
    assert all(r.status_code == 200 for r in responses)
    assert many < 64 * latency / 4, f"64 concurrent requests took {many:.2f} s"


def test_stop_ends_pending_requests_and_frees_the_port():
    server = start_server("echo", faults="timeout@1")
    errors: list[Exception] = []

    def hang() -> None:
        try:
            httpx.post(server.url + "/chat/completions", json=chat_body(), timeout=30)
        except Exception as exc:  # the server closes the hanging request on stop
            errors.append(exc)

    client = threading.Thread(target=hang)
    client.start()
    time.sleep(0.3)
    start = time.perf_counter()
    server.stop()
    client.join(5)
    assert time.perf_counter() - start < 3 and not client.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], httpx.TransportError)
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/models")
    server.stop()  # idempotent


def test_secrets_never_reach_logs(caplog, capfd):
    with caplog.at_level(logging.DEBUG), start_server("echo", faults="500@1") as server:
        for _ in range(2):
            httpx.post(server.url + "/chat/completions", json=chat_body(),
                       headers={"Authorization": "Bearer sk-very-secret-123"})
    out, err = capfd.readouterr()
    assert "sk-very-secret" not in caplog.text + out + err


def test_main_reports_user_errors(capsys):
    assert main(["--model", "echo", "--faults", "teapot:0.5"]) == 2
    assert main(["--model", "echo", "--port", "-5"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 2 and "teapot" in err


# ---- real model --------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm_answers_over_http(machine_cache):
    from openai import OpenAI

    with start_server("smollm2-135m-instruct") as server:
        client = OpenAI(base_url=server.url, api_key="sk-test", max_retries=0)
        out = client.chat.completions.create(
            model="smollm2-135m-instruct", messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=24, temperature=0, logprobs=True,
        )
    assert "Paris" in out.choices[0].message.content
    assert len(out.choices[0].logprobs.content) == out.usage.completion_tokens
