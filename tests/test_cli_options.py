"""The model options of ``probae train`` are read from the family table: every option a
family takes has a flag, parses to the type the table gives, and says which families
take it and with which defaults."""

import argparse

import pytest

from probae import cli
from probae.models import families
from probae.models.families import FAMILIES, OPTIONS, SHARED_OPTIONS

#: options the training data set rather than the command line
SET_FROM_DATA = {"dataset_size"}


def _train_parser():
    commands = next(
        a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    return commands.choices["train"]


def _actions():
    return {a.dest: a for a in _train_parser()._actions}


def _takers(key):
    return [name for name, family in FAMILIES.items() if key in family.options]


def test_every_option_a_family_takes_is_described_and_nothing_else():
    taken = {key for family in FAMILIES.values() for key in family.options}
    assert set(OPTIONS) == (taken | set(SHARED_OPTIONS)) - SET_FROM_DATA


@pytest.mark.parametrize("key", list(OPTIONS))
def test_each_described_option_has_its_flag_in_its_group(key):
    option = OPTIONS[key]
    flag = "--" + key.replace("_", "-")
    action = _actions()[key]
    assert flag in action.option_strings
    groups = {a.dest: g.title for g in _train_parser()._action_groups for a in g._group_actions}
    assert groups[key].startswith(
        {"model": "model", "family": "options of some families", "training": "training"}[
            option.section
        ]
    )
    if option.section != "model":  # the help ends with the families that take it
        assert action.help.endswith(f"[{', '.join(_takers(key))}]")
    if option.choices is not None:
        assert list(action.choices) == list(option.choices)


@pytest.mark.parametrize("key", [k for k, o in OPTIONS.items() if "{default}" in o.help])
def test_the_help_states_every_family_default(key):
    help_text = _actions()[key].help
    for name in _takers(key):
        value = FAMILIES[name].options[key]
        if isinstance(value, list):
            shown = ",".join(map(str, value)) or "none"
        elif isinstance(value, float):
            shown = f"{value:g}"
        else:
            shown = str(value)
        assert shown in help_text, (key, name, shown)
    if len({str(FAMILIES[n].options[key]) for n in _takers(key)}) > 1:
        assert ";" in help_text  # the others are listed after the most common one


def _written(value, option):
    """``value`` as one writes it on the command line."""
    if option.type is list:
        return ",".join(map(str, value)) or "none"
    return str(value)


@pytest.mark.parametrize("key", [k for k, o in OPTIONS.items() if o.type is not bool])
def test_each_family_default_written_on_the_command_line_parses_back_to_itself(key):
    option = OPTIONS[key]
    parser = _train_parser()
    defaults = [FAMILIES[n].options[key] for n in _takers(key)] or [SHARED_OPTIONS[key]]
    values = [v for v in defaults if v is not None] or [option.type(3)]
    for value in values:
        parsed = getattr(
            parser.parse_args([f"--{key.replace('_', '-')}", _written(value, option)]), key
        )
        assert parsed == value and type(parsed) is type(value), (key, value, parsed)
    assert getattr(parser.parse_args([]), key) is None  # not given: the family decides


def test_a_switch_that_is_on_by_default_can_be_turned_off():
    parser = _train_parser()
    for key in [k for k, o in OPTIONS.items() if o.type is bool]:
        flag = "--" + key.replace("_", "-")
        assert getattr(parser.parse_args([flag]), key) is True
        on = any(FAMILIES[n].options[key] for n in _takers(key)) or SHARED_OPTIONS.get(key)
        if on:
            assert getattr(parser.parse_args(["--no-" + flag[2:]]), key) is False
        else:
            with pytest.raises(SystemExit):
                parser.parse_args(["--no-" + flag[2:]])


def test_a_bad_list_of_widths_is_refused_naming_its_own_flag(capsys):
    for argv, flag in [
        (["--model", "factor-vae", "--discriminator-hidden", "8,x"], "--discriminator-hidden"),
        (["--model", "stacked-dae", "--layers", "none"], "--layers"),
        (["--hidden", "0"], "--hidden"),
    ]:
        with pytest.raises(SystemExit) as stop:
            cli.main(["train", *argv])
        assert stop.value.code == 2
        assert f"{flag} must be comma-separated positive widths" in capsys.readouterr().err


def test_a_new_entry_in_the_table_is_a_new_flag(monkeypatch):
    monkeypatch.setitem(FAMILIES["ae"].options, "toy_width", 7)
    monkeypatch.setitem(FAMILIES["wae"].options, "toy_width", 9)
    monkeypatch.setitem(OPTIONS, "toy_width", families.Option("width of a toy ({default})", int))
    action = _actions()["toy_width"]
    assert action.help == "width of a toy (default: 7; 9 for wae) [ae, wae]"
    assert _train_parser().parse_args(["--toy-width", "5"]).toy_width == 5
