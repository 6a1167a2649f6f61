"""Pages generated from the code: the config schema (pydantic), the CLI (click), the stage graph.

``hooks.py`` replaces the markers ``<!-- generated: config -->``, ``cli`` and ``stages``
with this module's Markdown when MkDocs builds the site; ``tests/test_docs.py`` reads
:func:`config_fields` to require a description on every field.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass

import click
from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

CONSTRAINTS = {Ge: (">=", "ge"), Gt: (">", "gt"), Le: ("<=", "le"), Lt: ("<", "lt"),
               MinLen: ("length >=", "min_length"), MaxLen: ("length <=", "max_length")}


@dataclass(frozen=True)
class FieldDoc:
    """One documented config field: its dotted path, type, default, constraints and description."""

    path: str
    type: str
    default: str
    constraints: str
    description: str
    section: type[BaseModel] | None


def _models(annotation: typing.Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (itself, or the items of a tuple/list/dict)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _type_name(annotation: typing.Any) -> str:
    if annotation is type(None):
        return "None"
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(repr(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in typing.get_args(annotation))
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
    elif info.default is PydanticUndefined:
        return "required"
    else:
        value = info.default
    if isinstance(value, BaseModel):
        return "(section)"
    return f"`{value!r}`"


def _constraints(info: FieldInfo) -> str:
    parts = []
    for item in info.metadata:
        for kind, (symbol, attribute) in CONSTRAINTS.items():
            if isinstance(item, kind):
                parts.append(f"{symbol} {getattr(item, attribute)}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            parts.append(f"matches `{pattern}`")
    return ", ".join(parts)


def _doc(model: type[BaseModel]) -> str:
    """The first paragraph of a model's docstring, on one line."""
    return " ".join((model.__doc__ or "").strip().split("\n\n")[0].split())


def config_fields(model: type[BaseModel] | None = None, prefix: str = "") -> Iterator[FieldDoc]:
    """Every field of the pipeline config, depth first, sections before their fields.

    A field whose type is a section (or a tuple of records) takes the section's docstring as
    its description when it has none of its own; its fields follow under ``path.`` (``path[].``).
    """
    if model is None:
        from fedmm.config import Config

        model = Config
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _models(info.annotation)
        section = nested[0] if nested else None
        description = info.description or (_doc(section) if section else "")
        yield FieldDoc(path, _type_name(info.annotation), _default(info), _constraints(info), description, section)
        if section is not None:
            is_record = typing.get_origin(info.annotation) in (tuple, list, dict)
            yield from config_fields(section, f"{path}[]." if is_record else f"{path}.")


def _cell(text: str) -> str:
    """Text for one Markdown table cell: one line, pipes escaped."""
    return " ".join(text.replace("\\|", "|").replace("|", "\\|").split())


def _anchor(path: str) -> str:
    return path.replace(".", "-").replace("[]", "").replace("_", "-") or "top-level"


def config_markdown() -> str:
    """The schema as Markdown: one table per section, every field with type, default and description."""
    sections: dict[str, list[FieldDoc]] = {"": []}
    heads: dict[str, FieldDoc] = {}
    for doc in config_fields():
        if doc.section is not None:
            heads[doc.path] = doc
        parent = doc.path.rsplit(".", 1)[0] if "." in doc.path else ""
        sections.setdefault(parent.removesuffix("[]"), []).append(doc)
    lines = []
    for key, docs in sections.items():
        lines += [f"## `{key}` {{ #{_anchor(key)} }}" if key else "## Top level", ""]
        if key:
            paragraphs = (heads[key].section.__doc__ or "").strip().split("\n\n")
            lines += [" ".join(p.split()) + "\n" for p in paragraphs if p.strip()]
        lines += ["| field | type | default | constraints | description |", "| --- | --- | --- | --- | --- |"]
        for d in docs:
            name = f"[`{d.path}`](#{_anchor(d.path)})" if d.section else f"`{d.path}`"
            lines.append(f"| {name} | {_cell(d.type)} | {_cell(d.default)} | {_cell(d.constraints)} | {_cell(d.description)} |")
        lines.append("")
    return "\n".join(lines)


def _option_row(param: click.Option) -> str:
    names = ", ".join(f"`{n}`" for n in (*param.opts, *param.secondary_opts))
    kind = "flag" if param.is_flag else param.type.name
    if param.multiple:
        kind += ", repeatable"
    value = param.to_info_dict()["default"]
    default = "" if value in (None, False, ()) or callable(value) else f"`{value}`"
    required = "yes" if param.required else ""
    return f"| {names} | {kind} | {required} | {default} | {_cell(getattr(param, 'help', '') or '')} |"


def _command_markdown(name: str, command: click.Command, parent: click.Context) -> list[str]:
    ctx = click.Context(command, info_name=name, parent=parent)
    usage = " ".join(command.collect_usage_pieces(ctx))
    lines = [f"## `fedmm {name}`", "", f"```\nfedmm {name} {usage}\n```", "", inspect.cleandoc(command.help or ""), ""]
    params = [p for p in command.params if isinstance(p, click.Option)]
    arguments = [p for p in command.params if isinstance(p, click.Argument)]
    if arguments:
        lines += ["Arguments: " + ", ".join(f"`{a.human_readable_name}`" for a in arguments), ""]
    if params:
        lines += ["| option | type | required | default | help |", "| --- | --- | --- | --- | --- |"]
        lines += [_option_row(p) for p in params]
        lines.append("")
    return lines


def cli_markdown() -> str:
    """Every visible ``fedmm`` command: usage, help text and options, read from the click group."""
    from fedmm.cli import main

    root = click.Context(main, info_name="fedmm")
    lines = [(main.help or "").strip(), ""]
    for name in main.list_commands(root):
        command = main.get_command(root, name)
        if command is not None and not command.hidden:
            lines += _command_markdown(name, command, root)
    return "\n".join(lines)


def _stage_edges(pipeline) -> dict[tuple[str, str], str]:
    """Edges between stages, labelled with what flows, without those another path already implies."""
    edges = {}
    for stage in pipeline.stages:
        for artifact in stage.inputs:
            edges[(pipeline.producer(artifact).name, stage.name)] = artifact
        edges.update({(before, stage.name): "passed" for before in stage.after})

    def reaches(source: str, target: str, skip: tuple[str, str]) -> bool:
        frontier = [v for (u, v) in edges if u == source and (u, v) != skip]
        seen = set()
        while frontier:
            node = frontier.pop()
            if node == target:
                return True
            seen.add(node)
            frontier += [v for (u, v) in edges if u == node and v not in seen]
        return False

    return {edge: label for edge, label in edges.items() if not reaches(*edge, skip=edge)}


def _graph_markdown(pipeline) -> list[str]:
    lines = [f"## The `{pipeline.name}` graph", "", "```mermaid", "flowchart LR"]
    for stage in pipeline.stages:
        shape = f'{{"{stage.name}"}}' if stage.gate else f'["{stage.name}"]'
        lines.append(f"  {stage.name.replace('-', '_')}{shape}")
    for (source, target), label in _stage_edges(pipeline).items():
        arrow = "-.->" if label == "passed" else "-->"
        lines.append(f"  {source.replace('-', '_')} {arrow}|{label}| {target.replace('-', '_')}")
    lines += ["```", "", f"| stage | `{pipeline.module}` function | reads artifacts | writes | config keys | cached | GPUs |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for s in pipeline.stages:
        reads = ", ".join(f"`{key}`" for key in s.reads) or "none"
        lines.append(f"| `{s.name}` | `{s.function}` | {', '.join(s.inputs) or 'none'} | {s.output} | {reads} | "
                     f"{'yes' if s.cacheable else 'no'} | {'`train.gpus`' if s.gpu else ''} |")
    return [*lines, ""]


def stages_markdown() -> str:
    """Every graph of ``fedmm/graph.py``: a mermaid picture and a table of each stage's inputs and keys."""
    from fedmm import graph

    return "\n".join(line for pipeline in graph.GRAPHS.values() for line in _graph_markdown(pipeline))
