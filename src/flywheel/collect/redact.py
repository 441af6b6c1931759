"""Redaction of obvious personal data in free text (user comments, AI drafts and final texts).

`redact` replaces each item it finds with a token naming its kind, one of `KINDS`:

- ``[email]``: ordinary addresses such as ``jane.doe+tag@example.co.uk``.
- ``[card]``: 13 to 19 digits, contiguous or in groups of 3 to 6 digits split by one kind of
  separator (a single space or dash), e.g. ``4111 1111 1111 1111`` or Amex ``3782 822463 10005``,
  redacted only when the digits pass the Luhn check and are not all the same digit. A card is
  found inside a longer run of groups too (``ref 12 4111 1111 1111 1111 2``).
- ``[ip]``: IPv4 addresses with four valid octets, and IPv6 addresses (full, compressed, or
  with an IPv4 tail); candidates found by regular expression are confirmed with `ipaddress`.
- ``[phone]``: international numbers starting with ``+`` (7 to 15 digits, single spaces, dots
  or dashes, an optional bracketed area code such as ``+44 (0)20 ...``); North American numbers
  ``(202) 555-0143``, ``202-555-0143``, ``202.555.0143`` (optionally prefixed by ``1-``);
  national numbers with a trunk ``0`` and one consistent separator, such as ``020 7946 0958``
  or ``06 12 34 56 78`` (9 to 15 digits); and bare runs of 10 to 15 digits.

The kinds are searched in that order, each on the text left by the previous one, so a card
number is never reported as a phone and an IP address never as a phone.

Deliberately not redacted, because false positives destroy useful feedback: short numbers
(``42``, ``2024``), dates (``2024-01-15``, ``15/01/2024``, ``15.01.2024``), times (``12:30``,
``12:30:45``), decimals (``3.14159``), money (``$1,234.56``), percentages, three-part version
strings (``1.2.3``), numbers that fail the Luhn check (order numbers), bare runs of fewer than
10 digits, digit groups with mixed separators, numbers glued to letters (``v1234567890``) or
prefixed by ``#`` or a currency sign, MAC addresses, and names, postal addresses or other
personal data that needs more than a pattern to recognise. Known limits: a four-part version
string such as ``1.2.3.4`` is a valid IPv4 address and is redacted; so is a bare run of 10 to
15 digits (a Unix timestamp, a long order number), since it cannot be told from a phone number.

Redaction is idempotent: the four passes are repeated until the text stops changing (once more
in the usual case, to confirm), which ends because every token removes a digit or an ``@`` and
adds none. Text with no ASCII digit and no ``@`` is returned as is, without running any regex.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["KINDS", "redact"]

KINDS = ("email", "phone", "card", "ip")

_TRIGGERS = frozenset("0123456789@")

_EMAIL_RE = re.compile(
    r"""
    (?<![\w.%+\-@])                                     # start of the local part
    [A-Za-z0-9_][A-Za-z0-9._%+\-]*
    @
    (?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)+    # domain labels
    [A-Za-z]{2,63}                                      # top-level domain
    (?![\w\-@])
    """,
    re.VERBOSE,
)

_CARD_RE = re.compile(  # a run of digit groups with one kind of separator; cards are found in it
    r"""
    (?<![\w.,+])
    [0-9]+(?:(?P<sep>[ \-])[0-9]+(?:(?P=sep)[0-9]+)*)?
    (?![\w]|[.,][0-9])
    """,
    re.VERBOSE,
)

_IP_RE = re.compile(
    r"""
    (?<![\w:.])
    (?P<v6>
        (?:[0-9A-Fa-f]{0,4}:){2,7}
        (?:[0-9]{1,3}(?:\.[0-9]{1,3}){3}|[0-9A-Fa-f]{1,4})?
    )
    (?![\w:]|\.[0-9])
  |
    (?<![\w.])
    (?P<v4>(?:[0-9]{1,3}\.){3}[0-9]{1,3})
    (?![\w]|\.[0-9]|::)
    """,
    re.VERBOSE,
)

_PHONE_RE = re.compile(
    r"""
    (?<![\w+$#\u00a3\u00a5\u20ac])      # not glued to a word, a number sign or a currency
    (?<![0-9][.,:/\-])                  # not the tail of a number, date, time or range
    (?<!::)                             # nor of an IPv6 address
    (?:
        (?P<intl>
            \+[0-9]{1,3}
            (?:[ .\-]?\([0-9]{1,4}\))?
            (?:[ .\-]?[0-9])+
        )
      | (?P<nanp>
            \([0-9]{3}\)\ ?[0-9]{3}[ .\-][0-9]{4}
          | (?:1[ .\-])?[0-9]{3}(?P<ns>[ .\-])[0-9]{3}(?P=ns)[0-9]{4}
        )
      | (?P<trunk>
            0[0-9]{1,4}(?P<ts>[ .\-])[0-9]{2,8}(?:(?P=ts)[0-9]{2,8}){0,3}
          | \(0[0-9]{1,4}\)\ ?[0-9]{2,8}(?:(?P<tp>[ .\-])[0-9]{2,8}(?:(?P=tp)[0-9]{2,8}){0,2})?
        )
      | (?P<bare>[0-9]{10,15})
    )
    (?![\w%+(]|[.,:/\-][0-9+(]|::)     # and not followed by more of one
    """,
    re.VERBOSE,
)

_PHONE_MIN_DIGITS = {"intl": 7, "nanp": 10, "trunk": 9, "bare": 10}
_PHONE_MAX_DIGITS = 15


def _digits(text: str) -> str:
    return "".join(ch for ch in text if "0" <= ch <= "9")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for position, ch in enumerate(reversed(digits)):
        value = ord(ch) - 48
        if position % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _email(_match: re.Match[str]) -> str:
    return "[email]"


def _is_card(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and _luhn_ok(digits)


def _card(match: re.Match[str]) -> str:
    run = match.group(0)
    if len(run) < 13:
        return run
    sep = match.group("sep")
    if sep is None:
        return "[card]" if _is_card(run) else run
    # Scan the groups left to right for the longest card starting at each group: a single group
    # of 13 to 19 digits, or consecutive groups of 3 to 6 digits. Cards are cut out of longer
    # runs, so a neighbouring number (a phone's last group, a count) does not hide them.
    groups = run.split(sep)
    pieces: list[str] = []
    start = 0
    while start < len(groups):
        end = start + 1 if _is_card(groups[start]) else 0
        digits = ""
        for stop in range(start, len(groups)):
            if not 3 <= len(groups[stop]) <= 6 or len(digits) + len(groups[stop]) > 19:
                break
            digits += groups[stop]
            if stop > start and _is_card(digits):
                end = stop + 1
        if end:
            pieces.append("[card]")
            start = end
        else:
            pieces.append(groups[start])
            start += 1
    return sep.join(pieces)


def _ip(match: re.Match[str]) -> str:
    candidate = match.group(0)
    try:
        if match.group("v4") is not None:
            ipaddress.IPv4Address(candidate)
        elif any("0" <= ch <= "9" for ch in candidate):
            ipaddress.IPv6Address(candidate)
        else:  # "::", "a::b", "dead::beef": too likely to be something else
            return candidate
    except ValueError:
        return candidate
    return "[ip]"


def _phone(match: re.Match[str]) -> str:
    text = match.group(0)
    if match.group("intl") is not None and len(text) > 2 and text[-2] == " ":
        # "+1 202 555 0143 2 times": a lone digit after a space is a count, not the number's end
        kept = _phone_digits_ok("intl", text[:-2])
        return "[phone]" + text[-2:] if kept else text
    return "[phone]" if _phone_digits_ok(_phone_kind(match), text) else text


def _phone_kind(match: re.Match[str]) -> str:
    return next(kind for kind in _PHONE_MIN_DIGITS if match.group(kind) is not None)


def _phone_digits_ok(kind: str, text: str) -> bool:
    return _PHONE_MIN_DIGITS[kind] <= len(_digits(text)) <= _PHONE_MAX_DIGITS


def _redact_once(text: str) -> str:
    if "@" in text:
        text = _EMAIL_RE.sub(_email, text)
    if any(digit in text for digit in "0123456789"):
        text = _CARD_RE.sub(_card, text)
        text = _IP_RE.sub(_ip, text)
        text = _PHONE_RE.sub(_phone, text)
    return text


def redact(text: str) -> str:
    """Replace emails, card numbers, IP addresses and phone numbers with ``[kind]`` tokens.

    >>> redact("Mail jane.doe+tag@example.co.uk or call +44 20 7946 0958 before 12:30.")
    'Mail [email] or call [phone] before 12:30.'
    >>> redact("Paid with 4111 1111 1111 1111 from 192.168.1.20; order 1234567812345678.")
    'Paid with [card] from [ip]; order 1234567812345678.'
    >>> redact("No numbers here.")
    'No numbers here.'
    """
    if _TRIGGERS.isdisjoint(text):
        return text
    while True:
        redacted = _redact_once(text)
        if redacted == text:
            return text
        text = redacted
