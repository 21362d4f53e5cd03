"""The wire codec: every body round-trips; any byte string decodes or raises ProtocolError, nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from remora.netqueue import protocol as p

names = st.text(min_size=1, max_size=40).filter(lambda s: len(s.encode()) <= p.MAX_NAME)


@given(
    job_id=names,
    queue=names,
    priority=st.integers(1, 10),
    delay=st.integers(0, 10**6),
    ttr=st.integers(0, 10**6),
    attempts=st.integers(1, 1000),
    body=st.binary(max_size=300),
)
def test_put_round_trips(job_id, queue, priority, delay, ttr, attempts, body):
    req = p.decode_put(p.encode_put(job_id, queue, priority, delay / 1000, ttr / 1000, attempts, body))
    assert (req.id, req.queue, req.priority, req.delay, req.ttr, req.max_attempts, req.body) == (
        job_id,
        queue,
        priority,
        delay / 1000,
        ttr / 1000,
        attempts,
        body,
    )


def test_batch_reserve_touch_and_views_round_trip():
    items = [p.encode_put(f"j{i}", "q", 1 + i % 10, 0, 30, 3, b"b" * i) for i in range(20)]
    assert [r.id for r in p.decode_put_batch(p.encode_put_batch(items))] == [f"j{i}" for i in range(20)]
    req = p.decode_reserve(p.encode_reserve(["a", "b"], 2.5, 7, "w1"))
    assert (req.queues, req.timeout, req.count, req.worker) == (["a", "b"], 2.5, 7, "w1")
    job_id, req = p.decode_ack_reserve(p.encode_ack_reserve("x", ["a"], 0, 1, ""))
    assert job_id == "x" and req.queues == ["a"]
    res = [("id1", "q", 3, 2, 30.0, b"\x00\xff"), ("id2", "r", 10, 1, 0.5, b"")]
    assert p.decode_reservations(p.Reader(p.encode_reservations(res))) == res
    assert p.decode_touch(p.encode_touch(["a", "b"], "w")) == (["a", "b"], "w")
    assert p.decode_touch_reply(p.encode_touch_reply({"a": "ok", "b": "canceled", "c": "lost"})) == {
        "a": "ok",
        "b": "canceled",
        "c": "lost",
    }
    assert p.decode_ids(p.encode_ids(None)) is None and p.decode_ids(p.encode_ids(["z"])) == ["z"]
    assert p.decode_nack(p.encode_nack("j", 1.5)) == ("j", 1.5)
    assert p.decode_priority(p.encode_priority("j", 4)) == ("j", 4)
    assert p.decode_register(p.encode_register("w", "h", 8)) == ("w", "h", 8, None)
    assert p.decode_deregister(p.encode_deregister("w")) == "w"
    assert p.decode_list(p.encode_list("q", "dead", 5)) == ("q", "dead", 5)
    view = p.encode_view("j", "q", 2, "dead", 3, 1.5, b"body", "", "lease expired")
    (v,) = p.decode_views(p.encode_views([view]))
    assert (v["id"], v["state"], v["worker"], v["reason"], v["body"]) == ("j", "dead", None, "lease expired", b"body")
    assert p.decode_error(p.error_reply(p.OP_PUT, 9, "QUEUE_FULL", "full")[p.HEADER_SIZE :]) == ("QUEUE_FULL", "full")
    assert p.decode_hello(p.encode_hello("cli", "tok")) == (p.PROTOCOL_VERSION, "cli", "tok")


def test_frames_carry_version_opcode_flags_and_request_id():
    data = p.frame(p.OP_PING, 0xDEADBEEF, b"abc")
    assert p.HEADER.unpack_from(data) == (p.HEADER_SIZE - 4 + 3, p.PROTOCOL_VERSION, p.OP_PING, 0, 0xDEADBEEF)
    assert data[0] == 0  # a frame's first byte is 0: how the server tells it from HTTP
    assert p.reply(p.OP_PING, 1)[6:8] == b"\x00\x01"


@pytest.mark.parametrize(
    ("body", "decoder", "code"),
    [
        (p.encode_put("j", "q", 11, 0, 1, 1, b""), p.decode_put, "BAD_ARGUMENT"),
        (p.encode_put("j", "q", 5, 0, 1, 0, b""), p.decode_put, "BAD_ARGUMENT"),
        (p.encode_put("j", "q", 5, 0, 1, 1, b"")[:-1], p.decode_put, "BAD_FRAME"),
        (p.encode_put("j", "q", 5, 0, 1, 1, b"") + b"x", p.decode_put, "BAD_FRAME"),
        (p.encode_put("", "q", 5, 0, 1, 1, b""), p.decode_put, "NAME_TOO_LONG"),
        (p.encode_put("j" * 201, "q", 5, 0, 1, 1, b""), p.decode_put, "NAME_TOO_LONG"),
        (p.encode_reserve(["q"], 0, 1, "")[:6] + b"\x00\x00", p.decode_reserve, "BAD_ARGUMENT"),
        (b"\x02\xff\xfe", p.decode_id, "BAD_FRAME"),
        (p.encode_list(None, "nope", 1), p.decode_list, "BAD_ARGUMENT"),
        (p.encode_put_batch([b""] * 0)[:1], p.decode_put_batch, "BAD_FRAME"),
        (b"\x03\xe9", p.decode_put_batch, "BAD_ARGUMENT"),
    ],
)
def test_bad_bodies_raise_named_protocol_errors(body, decoder, code):
    with pytest.raises(p.ProtocolError) as err:
        decoder(body)
    assert err.value.code == code


def test_oversized_job_body_is_refused_before_it_is_copied():
    head = p._PUT.pack(5, 1, 0, 0, 1, 1, p.MAX_BODY + 1) + b"jq"
    with pytest.raises(p.ProtocolError) as err:
        p.decode_put(head)
    assert err.value.code == "BODY_TOO_LARGE"


def test_register_carries_resource_figures_in_an_optional_tail():
    figures = {"cpu_seconds": 1.25, "rss_bytes": 52428800.0, "threads": 7, "open_files": 12, "ssh_connections": 3}
    old = p.encode_register("w", "h", 4)
    body = p.encode_register("w", "h", 4, figures)
    assert body.startswith(old) and len(body) == len(old) + p.RESOURCES.size  # an old body is a prefix: older workers still decode
    assert p.decode_register(body) == ("w", "h", 4, figures)
    with pytest.raises(p.ProtocolError) as err:
        p.decode_register(body[:-1])
    assert err.value.code == "BAD_FRAME"
    nan = old + p.RESOURCES.pack(float("nan"), 0.0, 0, 0, 0)
    with pytest.raises(p.ProtocolError) as err:
        p.decode_register(nan)
    assert err.value.code == "BAD_ARGUMENT"
    with pytest.raises(p.ProtocolError):
        p.decode_deregister(b"")


DECODERS = [
    p.decode_put,
    p.decode_put_batch,
    p.decode_reserve,
    p.decode_ack_reserve,
    p.decode_id,
    p.decode_nack,
    p.decode_priority,
    p.decode_touch,
    p.decode_ids,
    p.decode_register,
    p.decode_deregister,
    p.decode_list,
    p.decode_hello,
    p.decode_auth,
    p.decode_u8,
    p.decode_u32,
    p.decode_start,
]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), index=st.integers(0, len(DECODERS) - 1))
def test_any_bytes_decode_or_raise_protocol_error(data, index):
    try:
        DECODERS[index](data)
    except p.ProtocolError as exc:
        assert exc.code in p.ERRORS


def test_the_protocol_document_names_every_operation_error_and_limit():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    for opcode, op_name in p.OP_NAMES.items():
        assert f"### {op_name} ({opcode})" in doc, op_name
    for code in p.ERRORS:
        assert f"| {code} |" in doc, code
    for limit in (
        "MAX_FRAME",
        "MAX_PREAUTH_FRAME",
        "MAX_BODY",
        "MAX_NAME",
        "MAX_BATCH",
        "MAX_RESERVE",
        "MAX_QUEUES",
        "MAX_TOUCH",
        "MAX_LIST",
    ):
        assert f"| {limit} |" in doc, limit
