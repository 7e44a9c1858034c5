"""The training configuration: what `distill train` resolves to on CUDA (checked here on a CPU machine),
the CPU fallback, the plain-TRL switch, and the fast path's pieces run on CPU."""
import pytest
import torch

from core.errors import DistillError
from train.dpo import DPOSettings, dpo_config
from train.fast import compile_layers, resolve_speed, trainer_arguments
from train.sft import SFTSettings, sft_config
from train.varlen import VARLEN, PACKED_MAX_LEN


@pytest.fixture
def gpu_bf16(monkeypatch):
    """TrainingArguments believing a bf16 GPU is there (its validation asks); nothing runs on it."""
    import transformers.training_args as training_args

    monkeypatch.setattr(training_args, "is_torch_bf16_gpu_available", lambda: True)


def test_auto_is_the_fast_path_on_cuda_and_the_cpu_path_without():
    fast = resolve_speed("auto", cuda=True, probe=False)
    assert (fast.name, fast.bf16, fast.tf32, fast.activation_checkpointing, fast.compile_layers, fast.attention,
            fast.packing, fast.static_decode) == ("fast", True, True, False, True, VARLEN, True, True)
    cpu = resolve_speed("auto", cuda=False)
    assert (cpu.name, cpu.bf16, cpu.compile_layers, cpu.attention, cpu.packing) == ("cpu", False, False, "sdpa", False)
    assert resolve_speed("cpu", cuda=True).name == "cpu"  # a user may force the CPU configuration


def test_plain_keeps_trl_defaults_and_bad_speeds_are_refused():
    assert trainer_arguments(resolve_speed("plain", cuda=True)) == {}
    with pytest.raises(DistillError, match="--speed fast needs a CUDA GPU"):
        resolve_speed("fast", cuda=False)
    with pytest.raises(DistillError, match="--speed 'turbo': use one of auto, fast, plain, cpu"):
        resolve_speed("turbo")


def test_sft_on_cuda_trains_bf16_packed_padding_free_without_checkpointing(tmp_path, gpu_bf16):
    speed = resolve_speed(SFTSettings().speed, cuda=True, probe=False)  # the default setting
    config = sft_config(SFTSettings(max_length=512), speed, tmp_path)
    assert config.bf16 and not config.use_cpu and not config.activation_checkpointing
    assert config.packing and config.packing_strategy == "bfd" and PACKED_MAX_LEN[0] == 512
    cpu = sft_config(SFTSettings(), resolve_speed("auto", cuda=False), tmp_path)
    assert not cpu.bf16 and cpu.use_cpu and not cpu.packing and cpu.train_sampling_strategy == "group_by_length"


def test_dpo_on_cuda_trains_bf16_without_checkpointing(tmp_path, gpu_bf16):
    config = dpo_config(DPOSettings(), resolve_speed("auto", cuda=True, probe=False), tmp_path)
    assert config.bf16 and not config.use_cpu and not config.activation_checkpointing


def test_the_fast_attention_and_compiled_layers_give_the_sdpa_loss_on_cpu():
    """The fast path's model pieces on CPU: varlen attention (its CPU reference kernel) over a right-padded
    batch, layers compiled with torch.compile's eager backend, same loss as sdpa."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    losses = {}
    for attention in ("sdpa", VARLEN):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attention)
        if attention == VARLEN:
            compile_layers(model, backend="eager")  # dynamo traces the layers; no C compiler needed
        losses[attention] = model(input_ids=ids, labels=ids).loss.item()
    assert losses[VARLEN] == pytest.approx(losses["sdpa"], abs=1e-5)
