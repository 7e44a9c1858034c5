"""The flags of the train scripts come from their settings dataclasses (train/cli.py)."""
import argparse
from dataclasses import dataclass, field

import pytest

from train.cli import add_settings, settings_from


@dataclass
class Knobs:
    steps: int = 3
    rate: float = 0.5
    name: str = "x"
    packing: bool = True


def test_one_typed_flag_per_field_and_bools_are_pairs():
    parser = argparse.ArgumentParser()
    add_settings(parser, Knobs)
    assert settings_from(parser.parse_args([]), Knobs) == Knobs()
    got = settings_from(parser.parse_args(["--steps", "7", "--rate", "0.1", "--name", "y", "--no-packing"]), Knobs)
    assert got == Knobs(steps=7, rate=0.1, name="y", packing=False)
    with pytest.raises(SystemExit):  # "--packing False" is not a way to turn it off
        parser.parse_args(["--packing", "False"])


def test_a_field_without_a_flag_type_is_refused():
    @dataclass
    class Odd:
        layers: list = field(default_factory=list)

    with pytest.raises(TypeError, match="Odd.layers"):
        add_settings(argparse.ArgumentParser(), Odd)
