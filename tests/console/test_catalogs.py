"""The console's languages (issue 20): every text the templates and pages translate has its
Simplified Chinese entry (a missing key fails here, not in front of a user), and counts follow
each language's CLDR plural rules through Babel (no "1 instance(s)").

Texts are found the way gettext tools find them: Jinja's own extractor
(``jinja2.ext.extract_from_ast``) over every template's syntax tree for ``_`` and ``_n``, and
Python's ``ast`` over the pages for calls of ``_``/``_n``/``n_`` and of the translators with a
literal text (implicitly concatenated literals are one text, as the interpreter sees them)."""

from __future__ import annotations

import ast
from pathlib import Path

from jinja2.ext import extract_from_ast

from gaia.console.web import (
    catalog,
    context_translator,
    plural_translator,
    templates,
    translator,
)

CONSOLE = Path(__file__).parents[2] / "gaia" / "console"
FUNCTIONS = ("_", "_n", "n_", "_p")  # _p(context, text): the key is "context|text"


def _template_texts() -> dict[str, str]:
    found: dict[str, str] = {}
    env = templates.env
    for path in sorted((CONSOLE / "templates").glob("*.html")):
        tree = env.parse(path.read_text(encoding="utf-8"))
        for _line, function, message in extract_from_ast(tree, FUNCTIONS):
            first = message[0] if isinstance(message, tuple) else message
            if function == "_p" and isinstance(message, tuple):
                first = f"{message[0]}|{message[1]}"
            if isinstance(first, str):
                found.setdefault(first, path.name)
    return found


def _python_texts() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in sorted(
        [*(CONSOLE / "pages").glob("*.py"), CONSOLE / "web.py", CONSOLE / "charts.py"]
    ):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            if isinstance(func, ast.Name):
                translating = func.id in FUNCTIONS  # _("...") (a factory's own call is not)
            else:  # plural_translator(language)("...", ...), translator(language)("...")
                translating = (
                    isinstance(func, ast.Call)
                    and isinstance(func.func, ast.Name)
                    and func.func.id in ("plural_translator", "translator")
                )
            first = node.args[0]
            if translating and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.setdefault(first.value, path.name)
    return found


def test_every_translated_text_has_its_chinese_entry() -> None:
    texts = {**_python_texts(), **_template_texts()}
    assert len(texts) > 500  # the extractors see the console (not an empty walk)
    chinese = catalog("zh-CN")
    missing = {text: where for text, where in texts.items() if text not in chinese}
    assert missing == {}, f"{len(missing)} texts without zh-CN: {list(missing.items())[:20]}"


def test_a_word_with_two_meanings_has_a_text_per_meaning() -> None:
    """A notification that was "sent" (已发送) is not the bytes "sent" by an instance (发送):
    one English word, two entries, told apart by their context (issue 20)."""
    zh = translator("zh-CN")
    zh_p, en_p = context_translator("zh-CN"), context_translator("en")
    assert zh_p("notification", "sent") == "已发送" and zh("sent") == "发送"
    assert en_p("notification", "sent") == "sent"
    assert zh_p("notification", "no such text") == "no such text"


def test_counts_follow_each_languages_plural_rules() -> None:
    en, zh = plural_translator("en"), plural_translator("zh-CN")
    one, other = "Deleted {count} instance: {ids}", "Deleted {count} instances: {ids}"
    assert en(one, other, 1, ids="3") == "Deleted 1 instance: 3"
    assert en(one, other, 2, ids="3, 4") == "Deleted 2 instances: 3, 4"
    assert en(one, other, 0, ids="") == "Deleted 0 instances: "
    assert zh(one, other, 1, ids="3") == "已删除 1 个实例\uff1a3"
    assert zh(one, other, 2, ids="3, 4") == "已删除 2 个实例\uff1a3, 4"
    assert translator("en")("Overview") == "Overview"
