"""Config fields check themselves, and the CLI's options are made from the same fields."""

import argparse

import pytest

from circuitlab.cli.options import add_settings, build
from circuitlab.core.errors import ConfigError
from circuitlab.finetune import METHODS, TrainConfig
from circuitlab.locate import STRATEGY_NAMES, LocateConfig, SampleConfig
from circuitlab.studies.reproduce import ReproduceConfig


def parser_for(cls, **kw):
    p = argparse.ArgumentParser()
    add_settings(p, cls, **kw)
    return p


@pytest.mark.parametrize("cls", [LocateConfig, SampleConfig, ReproduceConfig])
def test_cli_defaults_are_the_configs_defaults(cls):
    """No default is written twice: parsing no options builds the config's own defaults."""
    args = parser_for(cls).parse_args([])
    assert build(cls, args) == cls()


def test_choices_come_from_the_registries():
    p = parser_for(LocateConfig, names=["strategy"])
    assert p._option_string_actions["--strategy"].choices == STRATEGY_NAMES
    p = parser_for(TrainConfig, names=["method"])
    assert p._option_string_actions["--method"].choices == tuple(METHODS)


def test_options_parse_into_the_fields_types():
    p = parser_for(LocateConfig, flags={"n_per_layer": "--heads-per-layer"})
    args = p.parse_args(["--strategy", "random", "--seeds", "3,4", "--layers", "1-2", "--heads-per-layer", "2",
                         "--plain"])
    config = build(LocateConfig, args)
    assert config.strategy == "random" and config.seeds == (3, 4) and config.layers == (1, 2)
    assert config.n_per_layer == 2 and config.plain
    assert p.get_default("_flags")["n_per_layer"] == "--heads-per-layer"


@pytest.mark.parametrize("make, field", [
    (lambda: SampleConfig(n=0), "n"),
    (lambda: ReproduceConfig(all_docs=0), "all_docs"),
    (lambda: TrainConfig(task="sst2", method="lora", lr=-1.0), "lr"),
    (lambda: TrainConfig(task="sst2", method="lora", rank=True), "rank"),
    (lambda: TrainConfig(task="sst2", method="lora", warmup_steps=-1), "warmup_steps"),
    (lambda: TrainConfig(task="sst2"), "method"),
])
def test_a_bad_value_names_its_field(make, field):
    with pytest.raises(ConfigError) as e:
        make()
    assert e.value.field == field
