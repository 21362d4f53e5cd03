"""Property-based fuzzing of YAML job files.

Random text, truncations and byte flips of a valid file, type-confused field
values and oversized documents either load into job specs or fail with a
JobFileError whose message names the file -- never another exception.  (The
NetQueue frame decoder is fuzzed in tests/unit/test_netqueue_protocol.py and,
over a socket, in tests/integration/test_netqueue_server.py.)
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remora import jobfile
from remora.errors import JobFileError

VALID = """\
defaults:
  servers: [web-1, 'tag:db']
  timeout: 10m
jobs:
  - name: build
    command: make
    args: [-j, 4]
    priority: 2
    retries: 1
    env: {A: "1"}
  - script: |
      echo hello
    shell: bash
"""
FIELDS = [
    "command",
    "script",
    "args",
    "servers",
    "server",
    "priority",
    "timeout",
    "retries",
    "env",
    "pty",
    "queue",
    "name",
    "shell",
    "workdir",
]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.lists(st.one_of(st.integers(), st.text(max_size=8), st.none()), max_size=4),
    st.dictionaries(st.text(max_size=6), st.one_of(st.integers(), st.text(max_size=6), st.none()), max_size=3),
)
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


def load_or_clear_error(text: str) -> None:
    try:
        specs = jobfile.load_text(text, "fuzz.yaml")
    except JobFileError as exc:
        assert exc.message.startswith("fuzz.yaml"), exc.message
        assert len(exc.message) < 2000
    else:
        assert specs and all(spec.payload() for spec in specs)


@FUZZ
@given(st.text(max_size=400))
def test_random_text(text):
    load_or_clear_error(text)


@FUZZ
@given(st.integers(0, len(VALID)), st.integers(0, len(VALID) - 1), st.sampled_from(list(b"\x00\t\n :-[]{}'\"|>&*!%@`#\xff")))
def test_truncated_and_corrupted_valid_files(cut, where, byte):
    data = VALID.encode()
    load_or_clear_error(data[:cut].decode(errors="replace"))
    flipped = data[:where] + bytes([byte]) + data[where + 1 :]
    load_or_clear_error(flipped.decode(errors="replace"))


@FUZZ
@given(st.dictionaries(st.sampled_from(FIELDS), VALUES, min_size=1, max_size=6))
def test_type_confused_fields(fields):
    import json

    text = "\n".join(f"{key}: {json.dumps(value)}" for key, value in fields.items())
    load_or_clear_error(text)


@pytest.mark.parametrize(
    "text",
    [
        "command: " + "x" * 2_000_000,
        "jobs:\n" + "  - command: true\n" * 20_000,
        "a: &a [" + ",".join(["*a"] * 10) + "]\n" * 1,
        "x: " + "[" * 5000 + "]" * 5000,
        "lol: &a ['lol','lol']\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n",
        "command: true\n---\ncommand: [1, 2]\n",
        "\ufeffcommand: true",
    ],
    ids=["2MB-value", "20k-jobs", "self-alias", "deep-nesting", "billion-laughs", "multi-doc", "bom"],
)
def test_oversized_and_nasty_documents(text):
    load_or_clear_error(text)
