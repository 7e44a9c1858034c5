"""Device and dtype choice (clients/device.py), and that every model loader asks for it.

CUDA is mocked as available (torch.cuda.is_available etc. patched) and the model-loading function
is replaced by a recorder that stops before anything loads, so nothing actually goes to a GPU:
the tests assert the device and dtype each path would have loaded with.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import clients.local
import clients.models
import clients.teachers
from clients.device import DEVICE_ENV, DTYPE_ENV, check_device_name, pick_device, pick_dtype
from core.errors import DistillError
from store.store import Store


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """The machine's own DISTILL_DEVICE / DISTILL_DTYPE must not decide these tests."""
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    monkeypatch.delenv(DTYPE_ENV, raising=False)


def _mock_cuda(monkeypatch, available: bool, count: int = 2, bf16: bool = True) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count if available else 0)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: available and bf16)


@pytest.fixture
def cuda(monkeypatch):
    _mock_cuda(monkeypatch, True)


@pytest.fixture
def no_cuda(monkeypatch):
    _mock_cuda(monkeypatch, False)


class _Stop(DistillError):
    """Raised by the recording loader: nothing loads, and the CLIs report it as one line, exit 2."""


@pytest.fixture
def asked(monkeypatch) -> list[tuple[str, str, torch.dtype]]:
    """(model, device, dtype) of every model load; the load itself is replaced by _Stop."""
    calls: list[tuple[str, str, torch.dtype]] = []

    def record(name, device="auto", dtype=None):
        calls.append((name, device, dtype))
        raise _Stop("stopped before loading (test)")

    monkeypatch.setattr(clients.local, "load_model", record)
    monkeypatch.setattr(clients.teachers, "_loaded", {})  # a teacher cached by another test would skip the load
    return calls


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text and "\n" not in text
    return text


# ---- pick_device / pick_dtype ---------------------------------------------------------------------


def test_auto_is_the_gpu_when_torch_sees_one(cuda):
    assert pick_device() == pick_device("auto") == pick_device(" AUTO ") == "cuda"


def test_auto_is_the_cpu_without_cuda(no_cuda):
    assert pick_device() == pick_device("auto") == "cpu"


@pytest.mark.parametrize("name", ["cpu", "cuda", "cuda:0", "cuda:1"])
def test_explicit_devices_are_honoured(cuda, name):
    assert pick_device(name) == name


def test_the_environment_variable_overrides_auto_but_not_a_flag(cuda, monkeypatch):
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert pick_device() == pick_device("auto") == "cpu"
    assert pick_device("cuda:1") == "cuda:1"
    monkeypatch.setenv(DEVICE_ENV, "auto")
    assert pick_device() == "cuda"


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cuda:", "mps0", "cpu,cuda", "0"])
def test_unknown_devices_are_one_line_errors(cuda, name):
    with pytest.raises(DistillError) as err:
        pick_device(name)
    line = _one_line(err)
    assert "--device" in line and "not a device" in line and "cpu" in line


def test_a_bad_environment_value_names_the_variable(cuda, monkeypatch):
    monkeypatch.setenv(DEVICE_ENV, "gpu")
    with pytest.raises(DistillError) as err:
        pick_device()
    assert DEVICE_ENV in _one_line(err)


@pytest.mark.parametrize("name", ["cuda", "cuda:0"])
def test_cuda_without_a_gpu_says_so_and_how_to_fix(no_cuda, name):
    with pytest.raises(DistillError) as err:
        pick_device(name)
    line = _one_line(err)
    assert "no CUDA GPU" in line and "cpu" in line


def test_a_gpu_index_beyond_the_count_is_refused(cuda):
    with pytest.raises(DistillError) as err:
        pick_device("cuda:2")
    assert "2 GPU(s)" in _one_line(err)


def test_spelling_is_checked_without_torch_state():
    assert check_device_name("CUDA:3") == "cuda:3"
    with pytest.raises(DistillError):
        check_device_name("bogus")


def test_dtype_is_fp32_on_cpu_and_bf16_on_a_bf16_gpu(cuda):
    assert pick_dtype("cpu") is torch.float32
    assert pick_dtype("cuda") is torch.bfloat16
    assert pick_dtype("cuda:1") is torch.bfloat16


def test_a_gpu_without_native_bf16_gets_fp32(monkeypatch):
    _mock_cuda(monkeypatch, True, bf16=False)
    assert pick_dtype("cuda") is torch.float32


def test_dtype_overrides(cuda, monkeypatch):
    assert pick_dtype("cuda", "float32") is torch.float32
    assert pick_dtype("cpu", "bfloat16") is torch.bfloat16
    assert pick_dtype("cuda", "float16") is torch.float16
    monkeypatch.setenv(DTYPE_ENV, "float32")
    assert pick_dtype("cuda") is torch.float32
    assert pick_dtype("cuda", "bfloat16") is torch.bfloat16  # an explicit dtype wins over the variable
    with pytest.raises(DistillError) as err:
        pick_dtype("cuda", "fp8")
    assert "float32" in _one_line(err)


# ---- every loader asks for the automatic choice --------------------------------------------------


def test_local_generator_loads_on_the_gpu_in_bf16(cuda, asked):
    with pytest.raises(_Stop):
        clients.local.LocalGenerator("tiny-random")
    with pytest.raises(_Stop):
        clients.local.LocalGenerator("tiny-random", device="cpu")
    assert asked == [("tiny-random", "cuda", torch.bfloat16), ("tiny-random", "cpu", torch.float32)]


def test_get_teacher_loads_local_teachers_on_the_gpu(cuda, asked, monkeypatch):
    from clients.teachers import get_teacher

    for device in (None, "cuda:1"):
        with pytest.raises(_Stop):
            get_teacher("tiny-random", 4, device=device)
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    with pytest.raises(_Stop):
        get_teacher("tiny-random", 4)
    assert asked == [("tiny-random", "cuda", torch.bfloat16), ("tiny-random", "cuda:1", torch.bfloat16),
                     ("tiny-random", "cpu", torch.float32)]


def test_load_model_moves_weights_to_the_picked_device_and_dtype(cuda, monkeypatch, tmp_path):
    """clients.models.load_model itself, with from_pretrained and .to() recorded instead of run."""
    import transformers

    seen = {}

    class FakeModel:
        generation_config = SimpleNamespace(pad_token_id=0)

        def to(self, device):
            seen["device"] = device
            return self

        def eval(self):
            return self

    def from_pretrained(path, dtype=None):
        seen["dtype"] = dtype
        return FakeModel()

    monkeypatch.setattr(clients.models, "model_path", lambda name: tmp_path)
    monkeypatch.setattr(clients.models, "load_tokenizer", lambda path: SimpleNamespace(pad_token_id=0))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    clients.models.load_model("anything")
    assert seen == {"device": "cuda", "dtype": torch.bfloat16}
    clients.models.load_model("anything", "cpu")
    assert seen == {"device": "cpu", "dtype": torch.float32}


def test_serve_backend_loads_on_the_gpu(cuda, asked):
    from serve.backends import ModelBackend, Stats

    with pytest.raises(_Stop):
        ModelBackend("tiny-random", 4, 0.0, Stats())
    with pytest.raises(_Stop):
        ModelBackend("tiny-random", 4, 0.0, Stats(), "cpu")
    assert asked == [("tiny-random", "cuda", torch.bfloat16), ("tiny-random", "cpu", torch.float32)]


@pytest.mark.parametrize("flags, device", [([], "cuda"), (["--device", "cpu"], "cpu"),
                                           (["--device", "cuda:1"], "cuda:1")])
def test_distill_serve_passes_its_device_flag(cuda, asked, capsys, flags, device):
    from serve.cli import main

    assert main(["--model", "tiny-random", "--port", "0", *flags]) == 2  # the recorder's stop, one line
    assert asked == [("tiny-random", device, torch.float32 if device == "cpu" else torch.bfloat16)]
    assert capsys.readouterr().err.strip() == "error: stopped before loading (test)"


def test_distill_serve_cascade_loads_its_models_on_the_gpu(cuda, asked, monkeypatch, capsys):
    import serve.cascade
    from serve.cli import main

    monkeypatch.setattr(serve.cascade, "load_spec", lambda path: SimpleNamespace(models=["student", "teacher"]))
    monkeypatch.setattr(clients.models, "model_path", lambda name: name)
    assert main(["--cascade", "spec.json", "--port", "0"]) == 2
    assert asked == [("student", "cuda", torch.bfloat16)]  # the first load stops the test


def test_distill_serve_refuses_cuda_without_a_gpu(no_cuda, capsys):
    from serve.cli import main

    assert main(["--model", "tiny-random", "--port", "0", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA GPU" in err[0]


@pytest.fixture
def seeded(tmp_path, rows):
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        store.add_prompts(rows, "yesno")
    return path


def _eval(store_path, *flags: str) -> int:
    from distill.cli import main

    return main(["eval", "cascade", "--task", "yesno", "--student", "tiny-random", "--teacher", "tiny-random",
                 "--store", str(store_path), *flags])


def test_distill_eval_scores_on_the_gpu(cuda, asked, seeded, capsys):
    assert _eval(seeded) == 2  # the recorder stops at the student, before any scoring
    assert asked == [("tiny-random", "cuda", torch.bfloat16)]
    asked.clear()
    assert _eval(seeded, "--device", "cpu") == 2
    assert asked == [("tiny-random", "cpu", torch.float32)]


def test_distill_eval_refuses_cuda_without_a_gpu_before_loading(no_cuda, asked, seeded, capsys):
    assert _eval(seeded, "--device", "cuda") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no CUDA GPU" in err[0] and not asked


# ---- CPU stays exactly as before: fp32 ------------------------------------------------------------


def test_on_cpu_a_real_tiny_model_loads_in_fp32(no_cuda, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_CACHE", str(tmp_path / "cache"))
    gen = clients.local.LocalGenerator("tiny-random", batch_size=2)
    assert (gen.device, gen.dtype) == ("cpu", torch.float32)
    assert {p.dtype for p in gen.model.parameters()} == {torch.float32}
    assert {p.device.type for p in gen.model.parameters()} == {"cpu"}


# ---- on a real GPU: bf16 must not change greedy answers on a check set -----------------------------


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma-3-270m"])
def test_bf16_keeps_greedy_answers_on_a_check_set(name, machine_cache):
    """The answers bf16 gives (option choice, and a short greedy completion) equal fp32's on 64
    arc_easy test items; if this fails on some GPU, pick_dtype's bf16 default is wrong there."""
    from evals.scoring import mc_prompt
    from prompts.data import load_task

    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no native bf16: pick_dtype uses fp32 here")
    rows = load_task("arc_easy")
    shots = [r for r in rows if r.split == "train"][:3]
    test = [r for r in rows if r.split == "test"][:64]
    items = [(mc_prompt(r, shots), [" " + c for c in r.choices]) for r in test]
    answers = {}
    for dtype in ("float32", "bfloat16"):
        g = clients.local.LocalGenerator(name, device="cuda", dtype=dtype)
        details = g.continuation_details_batch(items)
        chosen = [max(range(len(d)), key=lambda i: sum(d[i]["token_logprobs"])) for d in details]
        texts = [row[0].text for row in g.generate([p for p, _ in items], max_new_tokens=8, stop=["\n"])]
        answers[dtype] = (chosen, texts)
        del g
        torch.cuda.empty_cache()
    (c32, t32), (c16, t16) = answers["float32"], answers["bfloat16"]
    assert c16 == c32, f"{sum(a != b for a, b in zip(c16, c32))}/{len(c32)} option choices changed in bf16"
    assert t16 == t32, f"{sum(a != b for a, b in zip(t16, t32))}/{len(t32)} greedy answers changed in bf16"
