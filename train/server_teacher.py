"""A teacher behind an HTTP server for on-policy distillation (`train.onpolicy --teacher-url`).

TRL's ServerDistillationTrainer (trl.experimental.server_distillation) swaps the local teacher's
forward pass for VLLMClient.get_sequence_logprobs, which sends each training batch as

    POST {base}/v1/completions {"model": <first id of GET /v1/models>, "prompt": [[token ids]],
                                "max_tokens": 1, "temperature": T, "prompt_logprobs": k}

after polling GET {base}/health, and reads each choice's `prompt_logprobs` (vLLM's format).
`vllm serve` and `distill serve` (serve/prompt_logprobs.py) both answer it.

VLLMClient's constructor refuses to run unless the `vllm` package is installed. vLLM is needed
only for NCCL weight sync with a *student* generation server, never for scoring, and has no CPU
wheels; so the client here is VLLMClient with its constructor replaced, and the request and the
parsing of the reply stay TRL's own code.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from unittest import mock

from core.errors import DistillError

CONNECT_TIMEOUT_S = 10.0


def base_url(url: str) -> str:
    """`http://host:port` from an OpenAI-style base URL: VLLMClient appends /v1/... and /health itself."""
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise DistillError(f"--teacher-url {url!r} must start with http:// or https://, "
                           "e.g. http://127.0.0.1:8000/v1")
    return url.removesuffix("/v1")


def served_model(base: str) -> str:
    """The model id the server reports; also a quick, clear check that the server is up."""
    try:
        with urllib.request.urlopen(f"{base}/v1/models", timeout=CONNECT_TIMEOUT_S) as reply:
            return str(json.load(reply)["data"][0]["id"])
    except (urllib.error.URLError, OSError, ValueError, KeyError, IndexError) as exc:
        raise DistillError(f"no OpenAI-compatible teacher server at {base}/v1 ({exc}): start one with "
                           "`distill serve --model NAME --port 8000` or `vllm serve NAME`") from None


def teacher_client_class() -> type:
    """VLLMClient minus the vLLM-import check of its constructor (heavy imports stay lazy)."""
    from trl.generation import vllm_client

    class HttpTeacherClient(vllm_client.VLLMClient):
        """VLLMClient's scoring half; only the vLLM-import check of its constructor is left out."""

        def __init__(self, base_url: str, connection_timeout: float = CONNECT_TIMEOUT_S, **_: Any) -> None:
            import requests
            from requests.adapters import HTTPAdapter
            from urllib3.util.retry import Retry

            self.session = requests.Session()
            # As TRL's constructor does: a transient 5xx or dropped connection should not end a run.
            retry = Retry(total=5, status_forcelist=[500, 502, 503], backoff_factor=2, allowed_methods=["POST", "GET"])
            self.session.mount("http://", HTTPAdapter(max_retries=retry))
            self.session.mount("https://", HTTPAdapter(max_retries=retry))
            self.base_url, self.host = base_url, None
            self.check_server(min(connection_timeout, CONNECT_TIMEOUT_S))
            self.model = self._get(f"{self.base_url}/v1/models")["data"][0]["id"]

    return HttpTeacherClient


def server_trainer_class() -> type:
    """ServerDistillationTrainer whose teacher client needs no `vllm` install."""
    from trl.experimental.server_distillation import ServerDistillationTrainer
    from trl.generation import vllm_client

    client_class = teacher_client_class()

    class HttpTeacherDistillationTrainer(ServerDistillationTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # TRL builds `VLLMClient(base_url=..., connection_timeout=...)` at the end of its
            # __init__; swapping the name for that call alone keeps the rest of its setup as is.
            with mock.patch.object(vllm_client, "VLLMClient", client_class):
                super().__init__(*args, **kwargs)

    return HttpTeacherDistillationTrainer
