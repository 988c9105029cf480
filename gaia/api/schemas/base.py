"""The shared vocabulary of the API's bodies: names, free text, labels, amounts, pages, errors.

The bodies themselves live by resource beside this module (``identity``, ``tenancy``,
``instance_configs``, ``clusters``, ``records``, ``overview``, ``configs``, ``apps``, ``alerts``),
all built from the types here. Validation happens at the edge: names are DNS labels, free text
has a length limit and is plain text (``OneLineText``, ``MultiLineText``: no control, bidi or
invisible format characters), every number has bounds. Whatever passes is safe to hand to the
domain and the store, to show in the console and to pass to a container. See
docs/architecture.md, "api".
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer

from gaia.domain.resources import MAX_AMOUNT, ResourceVector

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
USERNAME_PATTERN = r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control_chars(value: str) -> str:
    # Passwords only: never shown nor passed on, so only what the database cannot hold is refused.
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


# Format characters (Unicode category Cf) that real text needs: the zero-width joiner builds emoji
# sequences (👩‍💻) and Indic conjuncts, the non-joiner Persian and Indic words; the left-to-right,
# right-to-left and Arabic letter marks only set the direction of the neutral characters next to
# them in mixed Hebrew/Arabic and Latin text. Unlike the embeddings, overrides and isolates
# (U+202A-U+202E, U+2066-U+2069) they open no span, so they cannot reverse a run of text; rustc's
# Trojan Source lint (text_direction_codepoint_in_literal) also lets them through.
_ALLOWED_FORMAT = frozenset("\u200c\u200d\u200e\u200f\u061c")
_LINE_BREAKS = frozenset("\t\n\r")


def check_plain_text(value: str, *, multiline: bool) -> str:
    """Refuse characters that are not text a person meant to write.

    Refused: C0 and C1 control characters and DEL (a NUL is also a 500 on PostgreSQL), lone
    surrogates (not UTF-8: no database or cluster stores them), the line and paragraph separators
    (U+2028, U+2029), and format characters (category Cf) but the five above: the bidi
    embeddings, overrides and isolates, which reverse how the text around them reads (a display
    name that shows as something else in the overview, an env value that reads differently from
    what the container gets), and invisible ones such as U+200B ZERO WIDTH SPACE, U+2060 WORD
    JOINER, U+FEFF (BOM) and the tag characters that hide text.

    ``multiline`` also allows TAB, LF and CR: for descriptions, comments, message bodies, and
    what is passed to a container (env values, command arguments, config data), where a
    multi-line value (a script, a PEM block, a config file) is legitimate. Single-line fields
    (names, display names, zones, labels, subjects) refuse them too.

    Everything else is allowed: letters of every script, accents, CJK, emoji (with ZWJ and
    variation selectors), spaces such as U+00A0 and U+3000, private-use characters, and code
    points newer than Python's Unicode tables. The message names the character, never the value
    (which may be a secret); the API's 422 adds the field.
    """
    # The common case, checked in C: no Cc, Cf, Cs, Zl, Zp (nor Zs but the space) at all.
    probe = value.replace("\n", "").replace("\t", "").replace("\r", "") if multiline else value
    if probe.isprintable():
        return value
    for char in value:
        if char.isprintable() or char in _ALLOWED_FORMAT:
            continue
        if multiline and char in _LINE_BREAKS:
            continue
        category = unicodedata.category(char)
        if category in ("Zs", "Co", "Cn"):  # spaces, private use, unassigned
            continue
        raise ValueError(_refusal(char, category, multiline=multiline))
    return value


def _refusal(char: str, category: str, *, multiline: bool) -> str:
    code = f"U+{ord(char):04X}"
    if not multiline and char in _LINE_BREAKS:
        return f"contains {code} (a tab or line break), which is not allowed in a one-line field"
    if category == "Cs":
        return f"contains {code} (a lone surrogate), which is not valid UTF-8 text"
    name = unicodedata.name(char, "")
    what = f"{code} {name}" if name else f"{code} (a control character)"
    return f"contains {what}, which is not allowed"


def _one_line(value: str) -> str:
    return check_plain_text(value, multiline=False)


def _multi_line(value: str) -> str:
    return check_plain_text(value, multiline=True)


# Every user string the API accepts, shown in the console or passed to a container, is one of
# these (with its own length limit): ``Annotated[OneLineText, Field(max_length=63)]``. A type
# that also has a ``pattern`` puts the validator after it, ``Annotated[str, Field(pattern=...),
# OneLine]``: pydantic leaves a pattern that follows a validator out of the JSON schema.
OneLine = AfterValidator(_one_line)
MultiLine = AfterValidator(_multi_line)
OneLineText = Annotated[str, OneLine]
MultiLineText = Annotated[str, MultiLine]

Name = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=63)]
Username = Annotated[str, Field(pattern=USERNAME_PATTERN, min_length=1, max_length=63)]
DisplayName = Annotated[OneLineText, Field(max_length=200)]
Description = Annotated[MultiLineText, Field(max_length=2000)]
Password = Annotated[str, Field(min_length=8, max_length=256), AfterValidator(_no_control_chars)]
Language = Literal["en", "zh-CN"]
ShortText = Annotated[OneLineText, Field(max_length=63)]
LABEL_KEY = (
    r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
Labels = dict[
    Annotated[str, Field(pattern=LABEL_KEY, max_length=317)],
    Annotated[str, Field(pattern=LABEL_VALUE, max_length=63)],
]

# API units: cores and cards may be fractional; the rest are whole units.
_MAX = MAX_AMOUNT // 1000
Cores = Annotated[
    Decimal,
    Field(ge=0, le=_MAX, allow_inf_nan=False, max_digits=20),
    PlainSerializer(float, return_type=float, when_used="json"),
]
Cards = Cores
Whole = Annotated[int, Field(ge=0, le=_MAX)]


T = TypeVar("T")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ResourceAmounts(Strict):
    """Amounts on the eight quota dimensions, in API units."""

    cpu: Cores = Field(default=Decimal(0), description="CPU cores, in steps of 0.001")
    memory: Whole = Field(default=0, description="memory, MiB")
    local_disk: Whole = Field(default=0, description="local disk, GiB")
    cloud_disk: Whole = Field(default=0, description="normal cloud disk, GiB")
    shared_disk: Whole = Field(default=0, description="shared cloud disk, GiB")
    bandwidth: Whole = Field(default=0, description="egress bandwidth, Mbit/s")
    gpu: Cards = Field(default=Decimal(0), description="GPU cards, in steps of 0.01")
    gpu_memory: Whole = Field(default=0, description="GPU memory, MiB")

    def to_vector(self) -> ResourceVector:
        return ResourceVector.from_api(self.model_dump())

    @classmethod
    def from_vector(cls, vector: ResourceVector) -> ResourceAmounts:
        return cls.model_validate(
            {k: Decimal(str(v)) if isinstance(v, float) else v for k, v in vector.to_api().items()}
        )


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        default=None, description="pass as ?cursor= for the next page; null on the last page"
    )


class ErrorOut(BaseModel):
    code: str
    message: str
    details: Any = None
