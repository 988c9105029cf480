"""YAML from users, parsed so that a small document cannot become a huge one.

``yaml.safe_load`` builds no arbitrary Python objects, but it still follows anchors and aliases:
``a: &a [x, x, x, x, x, x, x, x, x]`` then ``b: &b [*a, *a, ...]`` nine times over is the
"billion laughs" document, a few hundred bytes that become a graph the JSON encoder (or any code
that walks it) expands to tens of megabytes. Nothing a user sends Gaia needs aliases (an app's
body, a kubeconfig), so ``load_untrusted_yaml`` refuses them outright instead of counting
expansions, and also bounds the size of the text and the depth of nesting (deep nesting costs
Python recursion and would surface as a stack error instead of a message).

What flows in: text. What flows out: plain ``dict``/``list``/scalars, exactly as
``yaml.safe_load`` builds them, or ``UnsafeYaml`` (an ``InvalidRequest``) naming the rule and the
line. Syntax errors stay ``yaml.YAMLError``: callers word those themselves (a kubeconfig's
error must not quote its content). One loader for every place that parses user YAML, so the
rule cannot drift.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import Node

from gaia.domain.errors import InvalidRequest

__all__ = ["MAX_DEPTH", "MAX_YAML_BYTES", "UnsafeYaml", "load_untrusted_yaml"]

MAX_YAML_BYTES = 256 * 1024
MAX_DEPTH = 32


class UnsafeYaml(InvalidRequest):
    """The YAML breaks one of the rules above (anchors, size, depth); the message says which."""


def _where(mark: yaml.Mark | None) -> str:
    return f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""


class _NoAliasLoader(yaml.SafeLoader):
    """``SafeLoader`` whose composer refuses anchors and aliases and counts nesting depth.

    The pure-Python loader, not libyaml's: the check has to sit in the composer, which the C
    loader does not let us override; the input is small (``MAX_YAML_BYTES``) so speed is moot.
    """

    max_depth = MAX_DEPTH

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise UnsafeYaml("YAML anchors and aliases are not accepted" + _where(event.start_mark))
        self._depth += 1
        if self._depth > self.max_depth:
            raise UnsafeYaml(
                f"YAML nests deeper than {self.max_depth} levels" + _where(event.start_mark)
            )
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_untrusted_yaml(
    text: str, *, max_bytes: int = MAX_YAML_BYTES, max_depth: int = MAX_DEPTH
) -> Any:
    """One YAML document from a user; ``UnsafeYaml`` for anchors/aliases, too many bytes or
    too deep nesting, ``yaml.YAMLError`` for a syntax error."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > max_bytes:
        raise UnsafeYaml(
            f"YAML is {size} bytes; at most {max_bytes} are accepted",
            details={"size": size, "max_bytes": max_bytes},
        )
    loader = _NoAliasLoader(text)
    loader.max_depth = max_depth
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()
