"""Template parameters: types, choices, checks at save, and quoting that never lets a value become shell syntax."""

from __future__ import annotations

import subprocess

import pytest

from remora import params
from remora.errors import ValidationError

DECLARED = params.check_parameters(
    [
        {"name": "value", "required": True},
        {"name": "count", "type": "int", "default": 2},
        {"name": "loud", "type": "bool"},
        {"name": "mode", "type": "choice", "choices": ["fast", "slow"], "default": "slow"},
        {"name": "token", "secret": True},
    ]
)
HOSTILE = "a; touch x $(touch x) `touch x` \"'\\ \n$HOME *"


def test_a_placeholder_is_one_literal_word_for_sh(tmp_path):
    command = params.substitute("printf '%s\\n' {{ value }} {{value}}", {"value": HOSTILE})
    done = subprocess.run(["sh", "-c", command], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout == f"{HOSTILE}\n{HOSTILE}\n"
    assert list(tmp_path.iterdir()) == []


def test_bind_applies_defaults_and_types():
    values = params.bind(DECLARED, {"value": "v", "count": "7", "loud": True})
    assert values == {"value": "v", "count": "7", "loud": "true", "mode": "slow", "token": ""}
    assert params.bind(DECLARED, {"value": "v", "loud": "FALSE"})["loud"] == "false"
    env, secret = params.export(DECLARED, {**values, "token": "abcd1234"})
    assert env["REMORA_PARAM_COUNT"] == "7" and env["REMORA_PARAM_LOUD"] == "true" and "REMORA_PARAM_TOKEN" not in env
    assert secret == {"REMORA_PARAM_TOKEN": "abcd1234"}
    assert params.recorded(DECLARED, {**values, "token": "abcd1234"})["token"] == "***"


@pytest.mark.parametrize(
    ("given", "named", "words"),
    [
        ({}, "value", "required"),
        ({"value": "v", "count": 1.0}, "count", "integer"),
        ({"value": "v", "count": False}, "count", "integer"),
        ({"value": "v", "count": "1e3"}, "count", "integer"),
        ({"value": "v", "loud": 1}, "loud", "true or false"),
        ({"value": "v", "mode": "FAST"}, "mode", "one of fast, slow"),
        ({"value": 5}, "value", "string"),
        ({"value": "v", "token": "ab"}, "token", "at least"),
        ({"value": "v", "other": "x"}, "other", "unknown"),
    ],
)
def test_bad_values_are_400s_naming_the_parameter(given, named, words):
    with pytest.raises(ValidationError) as info:
        params.bind(DECLARED, given)
    assert named in str(info.value) and words in str(info.value)


@pytest.mark.parametrize(
    ("declared", "words"),
    [
        ([{"name": "a", "type": "float"}], "type 'float'"),
        ([{"name": "a"}, {"name": "A"}], "twice"),
        ([{"name": "1a"}], "must be a letter"),
        ([{"name": "c", "type": "choice"}], "give choices"),
        ([{"name": "c", "type": "choice", "choices": ["x"], "default": "y"}], "default 'y'"),
        ([{"name": "s", "choices": ["x"]}], "only a choice"),
        ([{"name": "s", "secret": True, "default": "abcdef"}], "cannot have a default"),
        ([{"name": "s", "colour": "red"}], "unknown field"),
    ],
)
def test_bad_declarations_are_refused(declared, words):
    with pytest.raises(ValidationError) as info:
        params.check_parameters(declared)
    assert words in str(info.value)


def test_placeholders_must_name_a_declared_non_secret_parameter():
    params.check_placeholders({"command": "echo {{ value }}", "script": "echo {{count}}"}, DECLARED)
    with pytest.raises(ValidationError, match="not a declared parameter"):
        params.check_placeholders({"args": "{{ nope }}"}, DECLARED)
    with pytest.raises(ValidationError, match=r"\$REMORA_PARAM_TOKEN"):
        params.check_placeholders({"script": "curl -H {{ token }}"}, DECLARED)


def test_a_job_file_declares_parameters_and_binds_them():
    from remora import jobfile
    from remora.errors import JobFileError

    text = (
        "name: greet\ndescription: says hi\ncommand: echo {{ who }}\nparameters:\n"
        "  - {name: who, required: true}\n  - {name: level, type: choice, choices: [low, high], default: low}\n"
    )
    spec = jobfile.load_text(text)[0]
    assert spec.parameters == [
        {"name": "who", "required": True},
        {"name": "level", "type": "choice", "choices": ["low", "high"], "default": "low"},
    ]
    assert spec.template_body()["description"] == "says hi" and spec.template_body()["parameters"] == spec.parameters
    bound = spec.with_parameters({"who": HOSTILE})
    assert bound.command == "echo " + params.shlex.quote(HOSTILE) and bound.env["REMORA_PARAM_LEVEL"] == "low" and bound.parameters is None
    with pytest.raises(JobFileError, match="unknown key 'kind'"):
        jobfile.load_text("command: x\nparameters:\n  - {name: a, kind: int}\n")
    assert jobfile.load_text(jobfile.dump_template({**spec.template_body(), "secret_env": {}}))[0].parameters == spec.parameters
