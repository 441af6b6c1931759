"""Tests for flywheel.collect.redact: what is redacted, what is deliberately left alone."""

from __future__ import annotations

import doctest
import importlib
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel.collect.redact import KINDS, redact


def test_kinds() -> None:
    assert KINDS == ("email", "phone", "card", "ip")


def test_docstring_examples() -> None:
    result = doctest.testmod(importlib.import_module("flywheel.collect.redact"))
    assert result.attempted >= 3
    assert result.failed == 0


@pytest.mark.parametrize(
    "email",
    [
        "jane.doe+tag@example.co.uk",
        "john@example.com",
        "first_last-99@mail.sub.example.org",
        "UPPER.Case@Example.IO",
    ],
)
def test_email_redacted(email: str) -> None:
    assert redact(f"Write to {email}, thanks.") == "Write to [email], thanks."
    assert redact(f"<{email}>") == "<[email]>"


@pytest.mark.parametrize(
    "card",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "5500 0000 0000 0004",
        "3782 822463 10005",
        "378282246310005",
        "6011000990139424",
        "4222222222222",
    ],
)
def test_card_redacted(card: str) -> None:
    out = redact(f"My card is {card}. Please charge it.")
    assert out == "My card is [card]. Please charge it."


@pytest.mark.parametrize(
    "card", ["4111 1111 1111 1111", "4111-1111-1111-1111", "3782 822463 10005"]
)
def test_no_digit_sequence_of_a_card_survives(card: str) -> None:
    out = redact(f"card {card} exp soon; also {card}!")
    assert out == "card [card] exp soon; also [card]!"
    assert not re.search(r"[0-9]", out)
    for group in re.split(r"[ -]", card):
        assert group not in out


@pytest.mark.parametrize(
    "number",
    ["1234567812345678", "4111 1111 1111 1112", "4111-1111-1111-1112", "0000 0000 0000 0000"],
)
def test_card_failing_luhn_left_alone(number: str) -> None:
    text = f"Order {number} never arrived."
    assert redact(text) == text


@pytest.mark.parametrize(
    "ip",
    [
        "192.168.1.20",
        "10.0.0.1",
        "255.255.255.255",
        "0.0.0.0",
        "2001:db8::1",
        "::1",
        "fe80::1ff:fe23:4567:890a",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "::ffff:192.168.1.1",
    ],
)
def test_ip_redacted(ip: str) -> None:
    assert redact(f"Request from {ip} failed.") == "Request from [ip] failed."
    assert redact(f"host={ip}") == "host=[ip]"


def test_ip_with_port_and_prefix() -> None:
    assert redact("see 10.0.0.1:8080 and 10.1.0.0/16") == "see [ip]:8080 and [ip]/16"


@pytest.mark.parametrize(
    "text",
    [
        "Octet too large: 999.1.1.1 here.",
        "Upgraded to 1.2.3 yesterday.",
        "Five parts 1.2.3.4.5 is not an address.",
        "It was 12:30:45 when it broke.",
        "MAC 00:1A:2B:3C:4D:5E is hardware.",
        "C++ uses std::vector and a::b.",
    ],
)
def test_not_an_ip(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    "phone",
    [
        "+44 20 7946 0958",
        "+1-202-555-0143",
        "+33612345678",
        "+1 (202) 555-0143",
        "+44 (0)20 7946 0958",
        "+49.30.1234567",
        "(202) 555-0143",
        "202-555-0143",
        "202.555.0143",
        "202 555 0143",
        "1-202-555-0143",
        "020 7946 0958",
        "06 12 34 56 78",
        "07700 900123",
        "2025550143",
    ],
)
def test_phone_redacted(phone: str) -> None:
    assert redact(f"Call me on {phone} tomorrow.") == "Call me on [phone] tomorrow."
    assert redact(f"tel:{phone}") == "tel:[phone]"
    assert redact(f"({phone})") == "([phone])"


@pytest.mark.parametrize(
    "text",
    [
        "The answer is 42.",
        "Back in 2024 it worked.",
        "Add 3 twists of pepper.",
        "Released on 2024-01-15.",
        "Released on 15/01/2024.",
        "Released on 15.01.2024.",
        "On 2024-01-15 10 people came.",
        "Meet at 12:30 or 09:45.",
        "Pi is about 3.14159 here.",
        "It costs $1,234.56 now.",
        "It costs \u20ac1234567890 in total.",
        "Accuracy went up 12.5% and 99%.",
        "Ticket 123456789 is open.",
        "Ticket #1234567890 is open.",
        "Build v1234567890 is out.",
        "Population 1 234 567 890.",
        "Pages 100-200 and 1995-2003.",
        "ISBN 978-0-306-40615-7.",
        "Score +3 points, then -5.",
        "Mixed 202-555.0143 separators.",
    ],
)
def test_not_redacted(text: str) -> None:
    assert redact(text) == text


def test_count_after_an_international_number_is_kept() -> None:
    assert redact("Call +1 202 555 0143 2 times.") == "Call [phone] 2 times."
    assert redact("Call +33 6 12 34 56 78 now.") == "Call [phone] now."


def test_mixed_text() -> None:
    text = (
        "Hi, I'm jane@example.com (phone +1-202-555-0143, office 020 7946 0958). "
        "I paid with 4111 1111 1111 1111 on 2024-01-15 at 12:30 from 192.168.0.7 "
        "and 2001:db8::42; order 1234567812345678 cost $1,234.56, 3 twists, 42%."
    )
    assert redact(text) == (
        "Hi, I'm [email] (phone [phone], office [phone]). "
        "I paid with [card] on 2024-01-15 at 12:30 from [ip] "
        "and [ip]; order 1234567812345678 cost $1,234.56, 3 twists, 42%."
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ref 12 4111 1111 1111 1111 2 items", "ref 12 [card] 2 items"),
        ("4111 1111 1111 1111 5500 0000 0000 0004", "[card] [card]"),
        ("(202) 555-0143 4111 1111 1111 1111", "[phone] [card]"),
        ("+44 20 7946 0958, 4111-1111-1111-1111", "[phone], [card]"),
    ],
)
def test_card_inside_a_longer_run(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_card_is_not_a_phone_and_ip_is_not_a_phone() -> None:
    assert redact("4222222222222") == "[card]"  # 13 digits passing Luhn: a card, not a phone
    assert redact("4111111111111") == "[phone]"  # fails Luhn: a bare run of 10 to 15 digits
    assert redact("4111 1111 1111 1") == "4111 1111 1111 1"  # fails Luhn, grouped: left alone
    assert redact("10.20.30.40") == "[ip]"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "No digits or at-signs here.",
        "Ünïcödé — text, with \u2018quotes\u2019 and emoji 🙂!",
        "a::b",
    ],
)
def test_text_without_digits_or_at_is_identical(text: str) -> None:
    assert redact(text) is text


@pytest.mark.parametrize(
    "text",
    [
        "jane@example.com 4111 1111 1111 1111 192.168.1.1 +44 20 7946 0958",
        "[email] [phone] [card] [ip]",
        "2025550143-2025550143",
        "4111111111111111-2025550143",
        "+1 202 555 0143-4111111111111111",
        "+44 20 7946 0958+44 20 7946 0958",
        "(202) 555-0143-(202) 555-0143",
        "4111111111111111-4111111111111111",
        "1.2.3.4-4111111111111111",
        "1.2.3.4::1",
        "2025550143::1",
        "jane@example.coma.b@c.io",
    ],
)
def test_idempotent_examples(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


_PIECES = st.sampled_from(
    [
        "jane@example.com",
        "a.b@c.io",
        "@",
        "4111 1111 1111 1111",
        "4111111111111111",
        "3782 822463 10005",
        "192.168.1.1",
        "2001:db8::1",
        "::",
        "+44 20 7946 0958",
        "(202) 555-0143",
        "202-555-0143",
        "020 7946 0958",
        "2025550143",
        "[phone]",
        "[card]",
    ]
)
_NOISY = st.text(alphabet="0123456789 .-:+()/@,#$%abcx[]", max_size=40)


@settings(max_examples=300, deadline=None, database=None)
@given(st.text())
def test_idempotent_on_arbitrary_text(text: str) -> None:
    once = redact(text)
    assert redact(once) == once


@settings(max_examples=500, deadline=None, database=None)
@given(st.lists(st.one_of(_PIECES, _NOISY), max_size=8).map("".join))
def test_idempotent_on_number_like_text(text: str) -> None:
    once = redact(text)
    assert redact(once) == once
    assert sum(ch.isdigit() for ch in once) <= sum(ch.isdigit() for ch in text)
