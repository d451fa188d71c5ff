"""PostgreSQL WAL positions (``pg_lsn``) as integers, so they compare and order.

Pure: the text form ``"16/B374D848"`` is two hexadecimal halves of a 64-bit
byte position.
"""

from __future__ import annotations


def parse_lsn(text: str) -> int:
    """``"16/B374D848"`` -> its byte position; ValueError if it is not an LSN."""
    high, sep, low = text.partition("/")
    if not sep or not high or not low or len(high) > 8 or len(low) > 8:
        raise ValueError(f"not a WAL position: {text!r}")
    return (int(high, 16) << 32) | int(low, 16)


def format_lsn(position: int) -> str:
    """Inverse of :func:`parse_lsn`."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"
