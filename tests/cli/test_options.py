"""CLI option defaults come from the config dataclasses (one place for every default).

Every option declared with :func:`batchrl_mtf.cli.options.config_option` is checked against its
field; the table below names the options that set a config field, so an option turned back into
a literal default (which could drift from the dataclass) fails here.
"""

from __future__ import annotations

import click
import pytest

from batchrl_mtf.cli import main
from batchrl_mtf.cli.options import ConfigOption, config_default, config_option
from batchrl_mtf.data.config import DatasetConfig
from batchrl_mtf.data.features import FeatureConfig
from batchrl_mtf.export import ExportConfig
from batchrl_mtf.learned.config import LearnedEnvConfig
from batchrl_mtf.ope import OPEConfig

# (command, option) -> (config class, field): options whose default is a config field's default
CONFIG_BACKED = {
    ("build-dataset", "--gamma"): (DatasetConfig, "gamma"),
    ("build-dataset", "--window-margin"): (DatasetConfig, "window_margin_s"),
    ("build-dataset", "--on-error"): (DatasetConfig, "on_error"),
    ("build-dataset", "--hist-n"): (FeatureConfig, "hist_n"),
    ("export", "--n-keys"): (ExportConfig, "n_auto_keys"),
    ("export", "--buckets"): (ExportConfig, "buckets"),
    ("export", "--min-support"): (ExportConfig, "min_support"),
    ("export", "--seed"): (ExportConfig, "seed"),
    ("export", "--fqe-steps"): (OPEConfig, "fqe_n_steps"),
    ("export", "--fqe-fits"): (OPEConfig, "fqe_n_fits"),
    ("evaluate", "--n-bootstrap"): (OPEConfig, "n_bootstrap"),
    ("evaluate", "--seed"): (OPEConfig, "seed"),
    ("make-env", "--n-candidates"): (LearnedEnvConfig, "n_candidates"),
    ("make-env", "--candidates"): (LearnedEnvConfig, "candidates"),
    ("make-env", "--ranker-targets"): (LearnedEnvConfig, "ranker_targets"),
    ("make-env", "--model"): (LearnedEnvConfig, "model"),
    ("make-env", "--epochs"): (LearnedEnvConfig, "n_epochs"),
    ("make-env", "--leave-recency"): (LearnedEnvConfig, "leave_recency_decay"),
    ("make-env", "--leave-classes"): (LearnedEnvConfig, "leave_classes"),
}


def _option(command: str, flag: str) -> click.Parameter:
    cmd = main.commands[command]
    found = [p for p in cmd.params if flag in getattr(p, "opts", ())]
    assert found, f"{command} has no option {flag}"
    return found[0]


@pytest.mark.parametrize(("command", "flag"), sorted(CONFIG_BACKED))
def test_option_default_is_read_from_its_config_field(command: str, flag: str) -> None:
    config, field = CONFIG_BACKED[(command, flag)]
    param = _option(command, flag)
    assert isinstance(param, ConfigOption), f"{command} {flag}: a literal default, not the config's"
    assert (param.config_class, param.config_field) == (config, field)
    assert param.default == config_default(config, field)


def test_every_config_option_of_every_command_matches_its_field() -> None:
    seen = 0
    for name, cmd in main.commands.items():
        for param in cmd.params:
            if isinstance(param, ConfigOption):
                seen += 1
                want = config_default(param.config_class, param.config_field)
                got = param.default
                expected = want if param.convert is None else param.convert(want)
                assert got == expected, f"{name} {param.opts}: {got!r} != {expected!r}"
    assert seen >= len(CONFIG_BACKED)


def test_config_option_refuses_a_literal_default_and_unknown_fields() -> None:
    with pytest.raises(TypeError, match=r"the default comes from DatasetConfig\.gamma"):
        config_option("--gamma", config=DatasetConfig, field="gamma", default=0.5)(lambda: None)
    with pytest.raises(KeyError, match="no field 'nope'"):
        config_default(DatasetConfig, "nope")
