"""Where values enter: the one description of what a config key or a command-line option may hold.

A `Range` says which numbers are allowed (whole or real, bounds open or closed; NaN and infinities are never
in a range) and how to say so in an error. `grm_jax.config` checks every numeric key against its `Range` (a
table there); the argparse types below check the options of every `grm-*` command with the same ranges, so a
bad value is one error naming the key or flag, the value and the allowed range, before any work starts:

    p.add_argument("--threshold", type=finite_float(0, 1))        # nan, inf, -1, 2 -> refused
    p.add_argument("--batch-size", type=positive_int)
    p.add_argument("--image-size", type=size_pair)                 # "320x240" -> (320, 240), both >= 1
    p.add_argument("--frames", type=int_range(lo=1))               # "60" -> 60, "60-90" -> (60, 90), A <= B

`read_name_list` / `checked_sequence_name` refuse a sequence name read from a list file (or given on the command
line) that could leave the dataset folder (path separators, `..`, absolute paths), and `read_utf8_text` a file
that is not UTF-8 text, naming file:line.
"""
from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .errors import UserError


@dataclass(frozen=True)
class Range:
    """Numbers in [lo, hi] (an open end excludes the bound; None: unbounded), whole numbers with `integer`."""

    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.integer and not (isinstance(value, int) or float(value).is_integer()):
            return False
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        return True

    def bounds(self) -> str:
        """'>= 1', '> 0', '<= 10', 'in [0, 1]', 'in [0, 1)' (empty when unbounded)."""
        if self.lo is not None and self.hi is not None:
            return (f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}"
                    f"{')' if self.hi_open else ']'}")
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        return ""

    def describe(self) -> str:
        """'an integer >= 1', 'a finite number in [0, 1]'."""
        kind = "an integer" if self.integer else "a finite number"
        return f"{kind} {self.bounds()}".rstrip()


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 2 ** 63 else f"{x:g}"


POSITIVE = Range(0, lo_open=True)                  # a finite number > 0
NON_NEGATIVE = Range(0)                             # a finite number >= 0
FRACTION = Range(0, 1)                              # a finite number in [0, 1]
COUNT = Range(0, integer=True)                      # an integer >= 0
POSITIVE_COUNT = Range(1, integer=True)             # an integer >= 1
# seeds reach numpy, TensorFlow and jax.random, which take them as 64-bit integers
SEED_RANGE = Range(0, 2 ** 63 - 1, integer=True)


# --- argparse types ------------------------------------------------------------------------------------------
# Each raises argparse.ArgumentTypeError: argparse then prints `prog: error: argument --flag: <message>` and exits
# with status 2 before the program does anything.

def _parse_number(text: str, integer: bool):
    text = str(text).strip()
    try:
        return int(text) if integer else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if integer else 'a number'}") from None


def number_in(allowed: Range) -> Callable[[str], Any]:
    """An argparse type: the option's number, refused unless `allowed` contains it."""
    def parse(text: str):
        value = _parse_number(text, allowed.integer)
        if not allowed.contains(value):
            raise argparse.ArgumentTypeError(f"got {text.strip()}, expected {allowed.describe()}")
        return value
    parse.__name__ = "integer" if allowed.integer else "number"   # argparse names the type in its own errors
    return parse


def finite_float(lo: Optional[float] = None, hi: Optional[float] = None, *, lo_open: bool = False,
                 hi_open: bool = False) -> Callable[[str], float]:
    return number_in(Range(lo, hi, lo_open, hi_open))


def int_in(lo: Optional[int] = None, hi: Optional[int] = None) -> Callable[[str], int]:
    return number_in(Range(lo, hi, integer=True))


positive_int = number_in(POSITIVE_COUNT)
non_negative_int = number_in(COUNT)
positive_float = number_in(POSITIVE)
non_negative_float = number_in(NON_NEGATIVE)
fraction = number_in(FRACTION)
seed = number_in(SEED_RANGE)


def size_pair(text: str) -> tuple[int, int]:
    """'WIDTHxHEIGHT' -> (width, height), both integers >= 1."""
    parts = str(text).lower().replace(" ", "").split("x")
    try:
        w, h = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected WIDTHxHEIGHT, e.g. 320x240") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"got {text!r}, expected WIDTHxHEIGHT with both integers >= 1")
    return w, h


def int_range(lo: int = 1) -> Callable[[str], "int | tuple[int, int]"]:
    """An argparse type for 'N' (-> N) or 'A-B' (-> (A, B)), integers >= lo with A <= B."""
    def parse(text: str):
        parts = str(text).replace(" ", "").split("-")
        try:
            values = [int(p) for p in parts]
        except ValueError:
            values = []
        if len(values) not in (1, 2):
            raise argparse.ArgumentTypeError(f"got {text!r}, expected N or MIN-MAX (integers >= {lo})")
        if any(v < lo for v in values) or (len(values) == 2 and values[0] > values[1]):
            raise argparse.ArgumentTypeError(f"got {text!r}, expected N or MIN-MAX with integers >= {lo} and "
                                             "MIN <= MAX")
        return values[0] if len(values) == 1 else (values[0], values[1])
    parse.__name__ = "range"
    return parse


# --- text and names read from files ----------------------------------------------------------------------------

class InputFileError(UserError, ValueError):
    """A text file a user gave that cannot be used as it is: not UTF-8, or a name in it that could leave its
    dataset folder (the message names file:line)."""


def read_utf8_text(path) -> str:
    """The text of a UTF-8 file (a local path or an etils.epath URL path); InputFileError naming file:line and the
    byte when it holds anything else (a binary file given by mistake, another encoding)."""
    data = path.read_bytes() if hasattr(path, "read_bytes") else open(path, "rb").read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise InputFileError(f"{os.fspath(path)}:{line}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                             f"{err.start})") from None


def checked_sequence_name(name: str, source: "str | os.PathLike", line: Optional[int] = None) -> str:
    """`name` when it is one plain folder name (no path separator, not '.' or '..', not absolute, no NUL); else
    InputFileError naming `source` (and `line`): such a name would read or write outside the dataset and results
    folders."""
    where = f"{os.fspath(source)}:{line}" if line is not None else os.fspath(source)
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or os.path.isabs(name):
        raise InputFileError(f"{where}: sequence name {name!r} is not a plain folder name (no path separators, "
                             "'..' or absolute paths)")
    return name


def read_name_list(path) -> list[str]:
    """The sequence names of a list file (one per line, blank lines skipped), each checked by
    `checked_sequence_name`; InputFileError naming file:line."""
    names = []
    for number, line in enumerate(read_utf8_text(path).splitlines(), 1):
        name = line.strip()
        if name:
            names.append(checked_sequence_name(name, path, number))
    return names
