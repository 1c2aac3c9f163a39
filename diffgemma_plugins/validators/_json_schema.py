"""JSON Schemas from clients, made safe to compile and to check documents against.

A schema given in a request (``builtin.json``'s ``schema`` option, ``response_format.json_schema`` over
HTTP) is untrusted. :func:`safe_schema_validator` returns a ``jsonschema`` validator that

* never touches the network or the file system: every ``$ref`` must resolve inside the schema itself (or
  to a JSON Schema meta-schema, which ``jsonschema`` ships); anything else is refused when the request
  arrives, and the validator's registry refuses every retrieval besides;
* cannot recurse without bound: a cycle of ``$ref``/``allOf``/``anyOf``/... that returns to a schema
  without first stepping into a property or an item of the document (``{"$ref": "#"}``) is refused, and the
  schema's own nesting and size are capped;
* matches ``pattern`` and ``patternProperties`` with RE2 (linear time) instead of Python's backtracking
  ``re``.

Every refusal is a ``ValueError`` whose message starts with ``schema``; the checker turns it into an
``InvalidRequestError``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
import referencing.jsonschema
from jsonschema.exceptions import ValidationError
from jsonschema_specifications import REGISTRY as META_SCHEMAS

from .regex_match import compile_linear

MAX_SCHEMA_DEPTH = 64
MAX_SCHEMA_NODES = 10_000
REFERENCE_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
# Subschemas applied to the same instance as their parent (a cycle through them never ends) ...
IN_PLACE_SINGLE = ("not", "if", "then", "else")
IN_PLACE_LISTS = ("allOf", "anyOf", "oneOf")
IN_PLACE_MAPS = ("dependentSchemas", "dependencies")
# ... and subschemas applied to a part of it (a cycle through them ends with the document).
DESCENDING_SINGLE = ("additionalProperties", "additionalItems", "contains", "propertyNames", "items",
                     "unevaluatedItems", "unevaluatedProperties")
DESCENDING_LISTS = ("prefixItems", "items")
DESCENDING_MAPS = ("properties", "patternProperties")


class _RetrievalRefused(Exception):
    pass


def _refuse_retrieval(uri: str) -> referencing.Resource:
    raise _RetrievalRefused(f"{uri!r} is outside the schema; no network or file access is made")


def safe_schema_validator(schema: Any) -> Any:
    """A ``jsonschema`` validator for ``schema`` that cannot reach out, loop forever or backtrack."""
    if not isinstance(schema, (Mapping, bool)):
        raise ValueError(f"schema must be a JSON Schema object, got {type(schema).__name__}")
    own_containers = _check_shape(schema)
    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    _check_references(schema, validator_class, own_containers)
    try:
        error = next(_meta_validator(validator_class).iter_errors(schema), None)
    except RecursionError:
        raise ValueError("schema nests too deeply to check") from None
    if error is not None:
        raise ValueError(f"schema is not a valid JSON Schema: {error.message}")
    _check_patterns(schema)
    registry = referencing.Registry(retrieve=_refuse_retrieval)  # type: ignore[call-arg]
    return _safe_class(validator_class)(schema, registry=registry)


@functools.lru_cache(maxsize=None)
def _meta_validator(validator_class: Any) -> Any:
    """What ``validator_class.check_schema`` builds on every call, built once."""
    meta_class = jsonschema.validators.validator_for(validator_class.META_SCHEMA, default=validator_class)
    return meta_class(validator_class.META_SCHEMA, format_checker=meta_class.FORMAT_CHECKER)


@functools.lru_cache(maxsize=None)
def _safe_class(validator_class: Any) -> Any:
    """``validator_class`` with its regex keywords on RE2."""
    return jsonschema.validators.extend(
        validator_class,
        {"pattern": _pattern, "patternProperties": _pattern_properties, "additionalProperties": _additional_properties},
    )


def _check_shape(schema: Any) -> set[int]:
    """Cap the schema's nesting and size (iteratively: a deep schema cannot overflow the stack here);
    returns the ids of its dicts and lists."""
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(schema, 0)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, (Mapping, list)):
            continue
        if depth > MAX_SCHEMA_DEPTH:
            raise ValueError(f"schema nests deeper than {MAX_SCHEMA_DEPTH} levels")
        seen.add(id(node))
        if len(seen) > MAX_SCHEMA_NODES:
            raise ValueError(f"schema has more than {MAX_SCHEMA_NODES} objects and arrays")
        children = node.values() if isinstance(node, Mapping) else node
        stack.extend((child, depth + 1) for child in children)
    return seen


def _check_patterns(schema: Any) -> None:
    """Every ``pattern`` and ``patternProperties`` key must compile with RE2, and ``unevaluatedProperties``
    (whose ``jsonschema`` implementation matches patterns with Python's ``re``) must not meet ``patternProperties``."""
    uses_unevaluated = uses_pattern_properties = False
    for node in _subschemas(schema):
        if isinstance(node.get("pattern"), str):
            _compiled(node["pattern"], "pattern")
        if isinstance(node.get("patternProperties"), Mapping):
            uses_pattern_properties = True
            for key in node["patternProperties"]:
                _compiled(key, "patternProperties")
        uses_unevaluated |= "unevaluatedProperties" in node
    if uses_unevaluated and uses_pattern_properties:
        raise ValueError("schema: patternProperties together with unevaluatedProperties is not supported")


def _subschemas(schema: Any) -> Iterator[Mapping[str, Any]]:
    """Every dict in the schema (a superset of its subschemas, which is all the pattern check needs)."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, Mapping):
            yield node
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


@functools.lru_cache(maxsize=256)
def _compiled(pattern: str, keyword: str = "pattern") -> Any:
    try:
        return compile_linear(pattern)
    except ValueError as error:
        raise ValueError(f"schema {keyword}: {error}") from None


def _pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator, patterns, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _compiled(pattern).search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator, additional, instance, schema):
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = [_compiled(p) for p in schema.get("patternProperties", {})]
    extras = [key for key in instance if key not in properties and not any(p.search(key) for p in patterns)]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        yield ValidationError(f"additional properties are not allowed ({', '.join(map(repr, sorted(extras)))})")


def _check_references(schema: Any, validator_class: Any, own: set[int]) -> None:
    """Resolve every reference reachable from the root without retrieval, and refuse in-place cycles."""
    refused: list[str] = []

    def record_and_refuse(uri: str) -> referencing.Resource:
        refused.append(uri)
        return _refuse_retrieval(uri)

    registry = referencing.Registry(retrieve=record_and_refuse)  # type: ignore[call-arg]
    specification = referencing.jsonschema.specification_with(
        validator_class.ID_OF(validator_class.META_SCHEMA) or "", default=referencing.jsonschema.DRAFT202012
    )
    root = specification.create_resource(schema)
    resolver = META_SCHEMAS.combine(registry).resolver_with_root(root)
    in_place: dict[int, list[int]] = {}
    names: dict[int, str] = {id(schema): "#"}
    stack: list[tuple[Any, Any, str]] = [(schema, resolver, "#")]
    while stack:
        node, node_resolver, where = stack.pop()
        if id(node) in in_place or not isinstance(node, Mapping):
            continue
        node_resolver = node_resolver.in_subresource(specification.create_resource(node))
        edges = in_place[id(node)] = []
        for child, descends, path in _children(node, where):
            if isinstance(child, Mapping):
                names.setdefault(id(child), path)
                stack.append((child, node_resolver, path))
                if not descends:
                    edges.append(id(child))
        for keyword in REFERENCE_KEYWORDS:
            reference = node.get(keyword)
            if not isinstance(reference, str):
                continue
            try:
                target = node_resolver.lookup(reference)
            except referencing.exceptions.Unresolvable as error:
                if not refused:
                    raise ValueError(f"schema {keyword} {reference!r} at {where} cannot be resolved: {error}") from None
                raise ValueError(
                    f"schema {keyword} {reference!r} at {where} points outside the schema; references must stay "
                    "inside it (e.g. '#/$defs/name'): no network or file access is made"
                ) from None
            if id(target.contents) in own and isinstance(target.contents, Mapping):
                names.setdefault(id(target.contents), reference)
                stack.append((target.contents, target.resolver, reference))
                edges.append(id(target.contents))
    cycle = _in_place_cycle(in_place)
    if cycle is not None:
        raise ValueError(
            f"schema refers back to {names.get(cycle, '#')!r} without descending into the document "
            "(infinite recursion, as in {'$ref': '#'})"
        )


def _children(node: Mapping[str, Any], where: str) -> Iterator[tuple[Any, bool, str]]:
    """``(subschema, descends, path)`` for the subschemas directly under ``node``."""
    groups = ((IN_PLACE_SINGLE, IN_PLACE_LISTS, IN_PLACE_MAPS, False),
              (DESCENDING_SINGLE, DESCENDING_LISTS, DESCENDING_MAPS, True))
    for singles, lists, maps, descends in groups:
        for keyword in singles:
            # a descending keyword may also hold a list ("items"): that form is read with the lists
            if keyword in node and (not descends or isinstance(node[keyword], Mapping)):
                yield node[keyword], descends, f"{where}/{keyword}"
        for keyword in lists:
            if isinstance(node.get(keyword), list):
                for index, child in enumerate(node[keyword]):
                    yield child, descends, f"{where}/{keyword}/{index}"
        for keyword in maps:
            if isinstance(node.get(keyword), Mapping):
                for key, child in node[keyword].items():
                    yield child, descends, f"{where}/{keyword}/{key}"


def _in_place_cycle(edges: Mapping[int, list[int]]) -> int | None:
    """A node on a cycle of ``edges`` (iterative depth-first search), or ``None``."""
    done: set[int] = set()
    for start in edges:
        if start in done:
            continue
        on_path: set[int] = {start}
        stack = [(start, iter(edges.get(start, ())))]
        while stack:
            node, successors = stack[-1]
            following = next(successors, None)
            if following is None:
                stack.pop()
                on_path.discard(node)
                done.add(node)
            elif following in on_path:
                return following
            elif following not in done:
                on_path.add(following)
                stack.append((following, iter(edges.get(following, ()))))
    return None
