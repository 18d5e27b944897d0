"""What a campaign's templates may do. Bodies, footer fields, subjects and preheaders are
written by staff or pasted from a client's copy: they run in Jinja's immutable sandbox, with
no loader, and may not name anything that starts with an underscore (`sender.__class__...`
reaches Python itself: a campaign text once ran a shell command at `campaigns load`).
"""

from __future__ import annotations

import functools

import jinja2
from jinja2 import nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment


@functools.cache
def campaign_environment(autoescape: bool) -> jinja2.Environment:
    """Campaign texts: sandboxed (no Python internals, no changing the values given) and with
    no loader, so a campaign cannot include or extend files of the server."""
    return ImmutableSandboxedEnvironment(
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


# Filters that read an attribute named by a string: x|attr("a"), xs|map(attribute="a.b")...
_ATTRIBUTE_FILTERS = frozenset(
    {"attr", "map", "selectattr", "rejectattr", "sort", "groupby", "unique", "min", "max", "sum"}
)


def private_names(ast: nodes.Template) -> list[tuple[int, list[str]]]:
    """Per line, the attributes and keys starting with an underscore that a template names:
    `x.__class__`, `x["_y"]`, `x|attr("_y")`, `xs|map(attribute="a._y")`. The sandbox refuses
    them at render time too; naming them here refuses the template before any of it runs,
    with its line."""
    found: dict[int, set[str]] = {}
    for node in ast.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        names: list[object] = []
        if isinstance(node, nodes.Getattr):
            names.append(node.attr)
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            names.append(node.arg.value)
        elif isinstance(node, nodes.Filter) and node.name in _ATTRIBUTE_FILTERS:
            given = [*node.args, *(kw.value for kw in node.kwargs)]
            for arg in given:
                if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
                    names += arg.value.split(".")
        for name in names:
            if isinstance(name, str) and name.startswith("_"):
                found.setdefault(node.lineno, set()).add(name)
    return [(line, sorted(names)) for line, names in sorted(found.items())]


def private_names_in(source: str) -> list[tuple[int, list[str]]]:
    """private_names of a template's source; none for one that does not parse (its syntax
    error is reported where it is compiled)."""
    try:
        return private_names(campaign_environment(True).parse(source))
    except jinja2.TemplateSyntaxError:
        return []


def private_name_problem(names: list[str]) -> str:
    quoted = ", ".join(repr(name) for name in names)
    return (
        f"{quoted} {'starts' if len(names) == 1 else 'start'} with an underscore: campaign "
        "templates may not reach Python's internals; use the variables listed in the README, "
        "e.g. {{ sender.organization }}"
    )


# Personal values are placeholders while compiling (compile.py): printed as they are, never
# filtered, tested or combined.
_PERSONAL_NAMES = frozenset({"unsubscribe_url", "preferences_url", "confirm_url"})


def misused_personal_value(ast: nodes.Template) -> nodes.Node | None:
    """The first place a personal value is used other than printed directly ({{ x }}).

    Personal values are placeholders while compiling: a filter, a test or a condition would
    act on the placeholder, not on the subscriber's value, so it is refused with its line.
    """

    def is_personal(node: nodes.Node) -> bool:
        if isinstance(node, nodes.Name):
            return node.name in _PERSONAL_NAMES
        return (
            isinstance(node, nodes.Getattr | nodes.Getitem)
            and isinstance(node.node, nodes.Name)
            and node.node.name == "subscriber"
        )

    def visit(node: nodes.Node, parent: nodes.Node | None) -> nodes.Node | None:
        if is_personal(node):
            return None if isinstance(parent, nodes.Output) else node
        if isinstance(node, nodes.Name) and node.name == "subscriber":
            return node  # `subscriber` itself, not one of its fields
        for child in node.iter_child_nodes():
            found = visit(child, node)
            if found is not None:
                return found
        return None

    return visit(ast, None)


def template_line(exc: BaseException) -> int | None:
    """The template line where a render error happened, from Jinja's rewritten traceback."""
    line = getattr(exc, "lineno", None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
