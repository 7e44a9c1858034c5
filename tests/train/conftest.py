"""Fixtures the training tests share."""

import pytest


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """DISTILL_CACHE in a fresh folder for a whole test module (tiny-random converts once per module)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DISTILL_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture
def student(tmp_path) -> str:
    """tiny-random's architecture and tokenizer with other random weights: a student far from its teacher."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from clients.models import model_path
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(model_path("tiny-random"))
    for p in model.parameters():
        p.data.normal_(0, 0.05)
    model.save_pretrained(tmp_path / "student")
    AutoTokenizer.from_pretrained(model_path("tiny-random")).save_pretrained(tmp_path / "student")
    return str(tmp_path / "student")
