"""A strict, fast parser for lines of whitespace-separated decimal numbers (numba).

Each line must hold exactly ``fields`` numbers of the form ``[+-]digits[.digits][(e|E)[+-]digits]``.
Numbers with at most 15 significant digits and a decimal exponent within +-22 are converted exactly
(an integer times or divided by an exact power of ten: the correctly rounded result); the rare others are
flagged and converted by Python's ``float``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# status codes
OK, BAD_COUNT, BAD_NUMBER = 0, 1, 2

_POW10 = np.array([10.0 ** i for i in range(23)])


@njit(cache=True)
def _is_space(c):  # pragma: no cover - compiled
    return c == 32 or c == 9 or c == 13 or c == 11 or c == 12


@njit(cache=True)
def parse_numbers(buf, fields, pow10):  # pragma: no cover - compiled
    """(table (lines, fields), slow (k, 2) [line, field] of numbers needing float(), status, bad line,
    fields seen on the bad line). Lines are counted from 1."""
    n = buf.size
    lines = 0
    for i in range(n):
        if buf[i] == 10:
            lines += 1
    if n > 0 and buf[n - 1] != 10:
        lines += 1
    table = np.zeros((lines, fields))
    slow = np.zeros((lines * fields, 2), dtype=np.int64)
    nslow = 0
    pos = 0
    line = 0
    while pos < n or line < lines:
        if line >= lines:
            break
        got = 0
        while True:
            while pos < n and _is_space(buf[pos]):
                pos += 1
            if pos >= n or buf[pos] == 10:
                break
            if got == fields:
                return table, slow[:nslow], BAD_COUNT, line + 1, got + 1
            # one number
            neg = False
            if buf[pos] == 43 or buf[pos] == 45:
                neg = buf[pos] == 45
                pos += 1
            mant = 0
            digits = 0
            sig = 0
            exp10 = 0
            seen = False
            while pos < n and 48 <= buf[pos] <= 57:
                d = buf[pos] - 48
                seen = True
                if sig > 0 or d != 0:
                    if sig < 18:
                        mant = mant * 10 + d
                    else:
                        exp10 += 1
                    sig += 1
                digits += 1
                pos += 1
            if pos < n and buf[pos] == 46:
                pos += 1
                while pos < n and 48 <= buf[pos] <= 57:
                    d = buf[pos] - 48
                    seen = True
                    if sig > 0 or d != 0:
                        if sig < 18:
                            mant = mant * 10 + d
                            exp10 -= 1
                        sig += 1
                    else:
                        exp10 -= 1
                    pos += 1
            if not seen:
                return table, slow[:nslow], BAD_NUMBER, line + 1, got + 1
            if pos < n and (buf[pos] == 101 or buf[pos] == 69):
                pos += 1
                eneg = False
                if pos < n and (buf[pos] == 43 or buf[pos] == 45):
                    eneg = buf[pos] == 45
                    pos += 1
                e = 0
                eseen = False
                while pos < n and 48 <= buf[pos] <= 57:
                    if e < 100000:
                        e = e * 10 + (buf[pos] - 48)
                    eseen = True
                    pos += 1
                if not eseen:
                    return table, slow[:nslow], BAD_NUMBER, line + 1, got + 1
                exp10 += -e if eneg else e
            if pos < n and not (_is_space(buf[pos]) or buf[pos] == 10):
                return table, slow[:nslow], BAD_NUMBER, line + 1, got + 1
            if mant == 0:
                v = 0.0
            elif sig <= 15 and -22 <= exp10 <= 22:
                v = float(mant)
                if exp10 >= 0:
                    v = v * pow10[exp10]
                else:
                    v = v / pow10[-exp10]
            else:
                v = 0.0
                slow[nslow, 0] = line
                slow[nslow, 1] = got
                nslow += 1
            table[line, got] = -v if neg else v
            got += 1
        if got != fields:
            return table, slow[:nslow], BAD_COUNT, line + 1, got
        pos += 1          # past the newline
        line += 1
    return table, slow[:nslow], OK, 0, 0
