"""SecretMasker: every occurrence of a secret value becomes *** however the output is split into reads."""

from __future__ import annotations

import itertools

import pytest

from remora.masking import MASK, SecretMasker


def reference(text: bytes, secrets: list[bytes]) -> bytes:
    """Mask the whole text at once: overlapping occurrences merge into one ***, touching ones do not."""
    spans = sorted((i, i + len(s)) for s in secrets for i in range(len(text)) if text.startswith(s, i))
    out, pos = bytearray(), 0
    for start, end in spans:
        if start < pos:
            pos = max(pos, end)
            continue
        out += text[pos:start] + MASK
        pos = end
    return bytes(out + text[pos:])


def masked(masker: SecretMasker, reads: list[bytes], stream: str = "out") -> bytes:
    return b"".join(masker.feed(stream, r) for r in reads) + masker.finish(stream)


SECRET = b"s3cr3t-value-123"


def test_split_at_every_position() -> None:
    text = b"line one\n" + SECRET + b"\nx" + SECRET + b" and " + SECRET + SECRET + b"\n"
    for cut in range(len(text) + 1):
        out = masked(SecretMasker([SECRET]), [text[:cut], text[cut:]])
        assert SECRET not in out, cut
        assert out == b"line one\n***\nx*** and ******\n", cut


def test_split_into_three_reads_at_every_pair_of_positions() -> None:
    text = b"ab" + SECRET + b"cd"
    for i, j in itertools.combinations(range(len(text) + 1), 2):
        assert masked(SecretMasker([SECRET]), [text[:i], text[i:j], text[j:]]) == b"ab***cd"


def test_one_byte_reads() -> None:
    text = b"--" + SECRET + b"--" + SECRET[:5] + b"--"
    assert masked(SecretMasker([SECRET]), [bytes([b]) for b in text]) == b"--***--" + SECRET[:5] + b"--"


def test_overlapping_secrets_mask_every_byte_of_both() -> None:
    secrets = [b"abcdef", b"defghi"]
    text = b"xxabcdefghiyy"
    assert reference(text, secrets) == b"xx***yy"
    for cut in range(len(text) + 1):
        assert masked(SecretMasker(secrets), [text[:cut], text[cut:]]) == b"xx***yy", cut


def test_a_secret_that_is_a_prefix_of_another() -> None:
    secrets = [b"tokn", b"tokn-longer-value"]
    for text in (b"a tokn-longer-value b", b"a tokn b", b"tokn-longer-valu", b"tokntokn-longer-value"):
        for cut in range(len(text) + 1):
            out = masked(SecretMasker(secrets), [text[:cut], text[cut:]])
            assert out == reference(text, secrets), (text, cut)
            assert b"tokn" not in out
    # the longer value is masked whole, not as *** followed by its rest
    assert masked(SecretMasker(secrets), [b"a tokn", b"-longer-value b"]) == b"a *** b"


def test_tail_is_flushed_at_the_end() -> None:
    masker = SecretMasker([SECRET])
    out = masker.feed("out", b"hello wor")
    assert out == b""  # shorter than the tail kept back
    assert masker.streams() == ["out"]
    assert masker.finish("out") == b"hello wor"
    assert masker.streams() == []
    assert masker.feed("out", b"x" * 40 + SECRET[:3]) == b"x" * (43 - len(SECRET) + 1)
    assert masker.finish("out") == b"x" * (len(SECRET) - 1 - 3) + SECRET[:3]


def test_streams_are_masked_independently() -> None:
    masker = SecretMasker([SECRET])
    got = {"out": b"", "err": b""}
    for stream, data in [
        ("out", b"1 " + SECRET[:6]),
        ("err", b"2 " + SECRET[:6]),
        ("out", SECRET[6:] + b"\n"),
        ("err", SECRET[6:] + b"\n"),
    ]:
        got[stream] += masker.feed(stream, data)
    assert {stream: data + masker.finish(stream) for stream, data in got.items()} == {"out": b"1 ***\n", "err": b"2 ***\n"}


@pytest.mark.parametrize("value", ["", "a", "abc"])
def test_values_too_short_are_not_masked(value: str) -> None:
    masker = SecretMasker([value])
    assert not masker
    assert masked(masker, [b"a b abc"]) == b"a b abc"


def test_random_texts_match_the_reference() -> None:
    import random

    rng = random.Random(7)
    alphabet = b"abcd"
    for _ in range(300):
        secrets = [bytes(rng.choice(alphabet) for _ in range(rng.randint(4, 7))) for _ in range(rng.randint(1, 3))]
        text = bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        cuts = sorted(rng.sample(range(len(text) + 1), min(3, len(text) + 1)))
        reads = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        out = masked(SecretMasker(secrets), reads)
        assert out == reference(text, secrets), (secrets, text, cuts)
