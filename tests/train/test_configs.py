"""The accelerate launch profiles in train/configs parse with accelerate's own loader."""
from pathlib import Path

import pytest

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "train" / "configs").glob("*.yaml"))


def test_every_named_profile_is_there():
    assert {p.stem for p in CONFIGS} >= {"single_gpu", "ddp", "fsdp", "zero2", "zero3"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_profile_loads_with_accelerate(path):
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(path))
    expected = {"single_gpu": "NO", "ddp": "MULTI_GPU", "fsdp": "FSDP", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED"}
    assert config.distributed_type.value == expected[path.stem]
    if path.stem.startswith("zero"):
        assert config.deepspeed_config["zero_stage"] == int(path.stem[-1])
