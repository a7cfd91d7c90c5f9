"""Every analysis's options are declared once (traj.options): its Params, its keyword function and its
Typer command agree on names, defaults, help and bounds."""

import dataclasses
import inspect

import click
import pytest
import typer

from traj.errors import ParameterError
from traj.options import Params, options_of


def _typer_params(command) -> dict[str, click.Parameter]:
    app = typer.Typer()
    app.command()(command)
    return {p.name: p for p in typer.main.get_command(app).params}


def _contracts():
    """(Params class, CLI command, {field: (cli name, cli default -> field default)}, keyword function)."""
    from traj.analysis.cmd import CMDParams, CMDScoring, cmd
    from traj.analysis.conjugacy import ConjugacyParams, conjugacy
    from traj.analysis.dmd import DMDEvaluationParams, DMDParams, dmd
    from traj.analysis.landscape import LandscapeParams
    from traj.analysis.prune import PruneParams, prune
    from traj.cli._common import parse_rank
    from traj.cli.cmd import cmd as cmd_command
    from traj.cli.conjugacy import conjugacy as conjugacy_command
    from traj.cli.dmd import dmd as dmd_command
    from traj.cli.kga import kga_replay as kga_command
    from traj.cli.landscape import landscape as landscape_command
    from traj.cli.prune import prune as prune_command
    from traj.training import KGA, KoopmanJump
    from traj.training.options import JumpOptions, KGAOptions

    def ints(text):
        return () if text is None else tuple(int(x) for x in text.split(","))

    def floats(text):
        return () if text is None else tuple(float(x) for x in text.split(","))

    return [
        (DMDParams, dmd_command, {"rank": ("rank", parse_rank), "layers": ("layer", None),
                                  "n_iter": ("power_iterations", None),
                                  "memory_bytes": ("memory_mb", lambda mb: int(mb * 2**20))}, dmd),
        (DMDEvaluationParams, dmd_command, {"ranks": ("eval_ranks", ints)}, None),
        (CMDParams, cmd_command, {}, cmd),
        (PruneParams, prune_command, {"methods": ("method", lambda text: tuple(text.split(","))),
                                      "compressions": ("compression", floats), "epochs": ("epochs", ints)}, prune),
        (LandscapeParams, landscape_command, {}, None),
        (ConjugacyParams, conjugacy_command, {}, conjugacy),
        # kga-replay sweeps α (--alpha takes a list, default 0.25); the prediction-based baselines' options
        # are --jump-*, beside KGA's own --window
        (KGAOptions, kga_command, {"alpha": (None, None)}, KGA),
        (JumpOptions, kga_command, {name: (f"jump_{name}", None) for name in ("window", "horizon", "every", "warmup")},
         KoopmanJump),
        (CMDScoring, cmd_command, {name: (name, floats if name == "ema" else ints) for name in
                                   ("ema", "sweep", "sweep_window", "sweep_subsample", "compare_dmd",
                                    "compare_modes")}, None),
    ]


CONTRACTS = _contracts()
IDS = [f"{c[0].__name__}-{c[1].__name__}" for c in CONTRACTS]


@pytest.mark.parametrize("params, command, renamed, function", CONTRACTS, ids=IDS)
def test_every_field_is_declared_with_help(params, command, renamed, function):
    assert issubclass(params, Params) and dataclasses.is_dataclass(params)
    declared = options_of(params)
    assert set(declared) == {f.name for f in dataclasses.fields(params)}
    for name, option in declared.items():
        assert option.help.strip(), name


@pytest.mark.parametrize("params, command, renamed, function", CONTRACTS, ids=IDS)
def test_the_command_takes_help_and_default_from_the_params(params, command, renamed, function):
    cli = _typer_params(command)
    seen = 0
    for name, option in options_of(params).items():
        cli_name, convert = renamed.get(name, (name, None))
        if cli_name is None or cli_name not in cli:
            continue  # a library-only option (n_samples, max_gram, random_state, ...) or one the CLI takes otherwise
        seen += 1
        p = cli[cli_name]
        default = p.default if convert is None else convert(p.default)
        assert default == getattr(params, name), name
        if name != "memory_bytes":  # --memory-mb is in MiB: its own help says so
            assert p.help == option.help, name
    assert seen >= 2


@pytest.mark.parametrize("params, command, renamed, function", [c for c in CONTRACTS if c[3] is not None],
                         ids=[i for c, i in zip(CONTRACTS, IDS, strict=True) if c[3] is not None])
def test_the_keyword_function_has_the_params_names_and_defaults(params, command, renamed, function):
    signature = inspect.signature(function).parameters
    for name in options_of(params):
        assert name in signature, name
        assert signature[name].default == getattr(params, name) or (
            signature[name].default is None and getattr(params, name) is None), name


@pytest.mark.parametrize("params, command, renamed, function", CONTRACTS, ids=IDS)
def test_every_bound_is_checked_at_construction(params, command, renamed, function):
    params()  # the defaults are valid
    checked = 0
    for name, option in options_of(params).items():
        default = getattr(params, name)
        for bad in ([option.low - 1] if option.low is not None else []) + \
                   ([option.high + 1] if option.high is not None else []):
            value = (int(bad),) if isinstance(default, tuple) else type(default)(bad) if default is not None else bad
            with pytest.raises(ParameterError) as info:
                params(**{name: value})
            assert info.value.parameter == name
            checked += 1
        if option.choices:
            with pytest.raises(ParameterError):
                params(**{name: "no-such-choice"})
            checked += 1
    assert checked >= 1
    with pytest.raises(ParameterError):
        params.checked(no_such_option=1)


def test_an_open_bound_refuses_the_bound_itself():
    from traj.analysis.conjugacy import ConjugacyParams

    assert ConjugacyParams(null_strength=0.333).null_strength == 0.333
    for edge in (0.0, 1 / 3):
        with pytest.raises(ParameterError, match="null_strength"):
            ConjugacyParams(null_strength=edge)


def test_a_switch_takes_only_true_or_false():
    from traj.analysis.conjugacy import ConjugacyParams
    from traj.training.options import KGAOptions

    assert ConjugacyParams(center=True, observable="pca:3").center is True
    for bad in ("no", "false", 1, None):
        with pytest.raises(ParameterError, match="center must be True or False"):
            ConjugacyParams(center=bad, observable="pca:3")
        with pytest.raises(ParameterError, match="efficient must be True or False"):
            KGAOptions(efficient=bad)


def test_the_reason_for_an_upper_bound_is_said_only_above_it():
    from traj.analysis.conjugacy import ConjugacyParams

    with pytest.raises(ParameterError, match=r"got 1001: the null's conformal bound"):
        ConjugacyParams(null_size=1001)
    with pytest.raises(ParameterError, match=r"got -1$"):
        ConjugacyParams(null_size=-1)


def test_replace_changes_one_option_and_nothing_else():
    """The fields keep what was given; what is derived from them (conjugacy's observed layer, the jumps'
    default spacing) is computed, so ``dataclasses.replace`` neither drops a change nor trips on a default."""
    from traj.analysis.conjugacy import ConjugacyParams
    from traj.training.options import JumpOptions

    by_layer, by_observable = ConjugacyParams(layer="fc1"), ConjugacyParams(observable="layer:fc1")
    assert by_layer.observed == by_observable.observed == "layer:fc1"
    assert by_layer.layer_name == by_observable.layer_name == "fc1"
    assert dataclasses.replace(by_layer, layer=None).observed == "all"
    assert dataclasses.replace(by_observable, observable="pca:3").observed == "pca:3"
    assert dataclasses.replace(by_layer, k=5).observed == "layer:fc1"
    with pytest.raises(ParameterError, match="layer and the observable 'pca:3' both given"):
        dataclasses.replace(by_layer, observable="pca:3")
    for bad in ("", 3):
        with pytest.raises(ParameterError, match="layer must be a parameter tensor's name"):
            ConjugacyParams(layer=bad)

    jump = JumpOptions(window=3)
    assert (jump.spacing, jump.first_epoch) == (2, 2) and (jump.every, jump.warmup) == (None, None)
    wider = dataclasses.replace(jump, window=10)
    assert (wider.spacing, wider.first_epoch) == (9, 9)
    assert wider.to_dict()["every"] == 9
    with pytest.raises(ParameterError, match="every must be at least 9 epochs"):
        dataclasses.replace(wider, every=8)
