"""The API's docs page (/api/docs/): the OpenAPI document of /v1/ (``api.openapi``), rendered
on the server for signed-in teammates. Nothing is fetched by the browser: every endpoint, its
parameters, its body's fields, its answers and their error codes are read out of the same
document /v1/openapi.json serves, so the page and the document cannot disagree."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from api.openapi import document
from api.serialize import base_url

Schema = dict[str, Any]
METHODS = ("get", "post", "put", "patch", "delete")
# Components shown in the schema section, in this order (the request body's are inlined).
SHOWN_SCHEMAS = ("Run", "Output", "File", "RunList", "CallbackDelivery", "CallbackPayload", "Error")
# The body's own components: their fields are listed inside the body, not linked.
INLINED = frozenset({"CreateRun", "Input", "Point", "Box"})


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    required: bool = False
    default: str = ""
    limits: list[str] = field(default_factory=list)
    description: str = ""
    deprecated: bool = False
    depth: int = 0
    link: str = ""  # the anchor of the schema the type names, when it has a section


@dataclass(frozen=True)
class Answer:
    status: str
    description: str
    content_types: list[str]
    type: str
    link: str
    codes: list[str]
    headers: list[str]

    @property
    def is_error(self) -> bool:
        return self.status[:1] in ("4", "5")


@dataclass(frozen=True)
class Callback:
    name: str
    expression: str
    summary: str
    description: str
    headers: list[Field]
    body: str
    link: str
    answers: list[Answer]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    anchor: str
    summary: str
    description: str
    tag: str
    authenticated: bool
    parameters: list[Field]
    body: list[Field]
    body_example: str
    answers: list[Answer]
    callbacks: list[Callback]


class Reader:
    """Reads the document: ``$ref``s resolved, types and limits in words."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self.schemas: dict[str, Schema] = doc["components"]["schemas"]

    def name_of(self, spec: Schema) -> str | None:
        target = spec.get("$ref", "")
        return target.rsplit("/", 1)[-1] if target.startswith("#/components/schemas/") else None

    def resolve(self, spec: Schema) -> Schema:
        name = self.name_of(spec)
        return self.schemas[name] if name else spec

    @staticmethod
    def anchor(name: str) -> str:
        return f"schema-{name}"

    def type_of(self, spec: Schema) -> tuple[str, str]:
        """(the type in words, the anchor of the schema it names or "")."""
        name = self.name_of(spec)
        if name:
            return name, "" if name in INLINED else self.anchor(name)
        for key in ("oneOf", "anyOf"):
            if key in spec:
                parts = [self.type_of(option) for option in spec[key]]
                link = next((anchor for _word, anchor in parts if anchor), "")
                return " or ".join(word for word, _anchor in parts), link
        if "allOf" in spec:
            return self.type_of(spec["allOf"][0])
        if "const" in spec:
            return json.dumps(spec["const"]), ""
        kinds = spec.get("type")
        if kinds is None:
            return "any", ""
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        words = []
        link = ""
        for kind in kinds:
            if kind == "array":
                item, link = self.type_of(spec.get("items", {}))
                words.append(f"array of {item}")
            elif kind == "string" and spec.get("format") in ("uuid", "date-time", "binary"):
                words.append(f"string ({spec['format']})")
            else:
                words.append(kind)
        return " or ".join(words), link

    @staticmethod
    def limits(spec: Schema) -> list[str]:
        found = []
        low, high = spec.get("minimum"), spec.get("maximum")
        if low is not None and high is not None:
            found.append(f"{low:,} to {high:,}")
        elif low is not None:
            found.append(f"at least {low:,}")
        elif high is not None:
            found.append(f"at most {high:,}")
        if "minLength" in spec:
            found.append(f"at least {spec['minLength']:,} characters")
        if "maxLength" in spec:
            found.append(f"at most {spec['maxLength']:,} characters")
        if "minItems" in spec and spec.get("minItems") == spec.get("maxItems"):
            found.append(f"exactly {spec['minItems']} items")
        else:
            if "minItems" in spec:
                found.append(f"at least {spec['minItems']:,} items")
            if "maxItems" in spec:
                found.append(f"at most {spec['maxItems']:,} items")
        if "maxProperties" in spec:
            found.append(f"at most {spec['maxProperties']:,} keys")
        names = spec.get("propertyNames", {})
        if "maxLength" in names:
            found.append(f"keys of {names.get('minLength', 0)} to {names['maxLength']} characters")
        values = spec.get("additionalProperties")
        if isinstance(values, dict) and "maxLength" in values:
            found.append(f"text values of at most {values['maxLength']:,} characters")
        enum = [value for value in spec.get("enum", []) if value is not None]
        if enum:
            found.append("one of " + ", ".join(json.dumps(value) for value in enum))
        if "x-enum-any-case" in spec:
            found.append("one of " + ", ".join(spec["x-enum-any-case"]) + " (any case)")
        elif "pattern" in spec:
            found.append(f"matches {spec['pattern']}")
        return found

    def fields(
        self,
        spec: Schema,
        prefix: str = "",
        depth: int = 0,
        *,
        inline: frozenset[str] = INLINED,
        seen: frozenset[str] = frozenset(),
    ) -> list[Field]:
        """Every property of an object schema, and those of the objects inside it (the
        schemas named in ``inline`` included; any other named schema is linked)."""
        spec = self.resolve(spec)
        required = set(spec.get("required", []))
        rows = []
        for name, prop in spec.get("properties", {}).items():
            full = f"{prefix}{name}"
            kind, link = self.type_of(prop)
            default = prop.get("default", _MISSING)
            rows.append(
                Field(
                    name=full,
                    type=kind,
                    required=name in required,
                    default="" if default is _MISSING else json.dumps(default),
                    limits=self.limits(prop),
                    description=prop.get("description", ""),
                    deprecated=bool(prop.get("deprecated")),
                    depth=depth,
                    link=link,
                )
            )
            rows += self.children(prop, full, depth + 1, inline=inline, seen=seen)
        return rows

    def children(
        self, prop: Schema, name: str, depth: int, *, inline: frozenset[str], seen: frozenset[str]
    ) -> list[Field]:
        target, suffix = prop, ""
        if "items" in prop:
            target, suffix = prop["items"], "[]"
        ref = self.name_of(target)
        if ref is not None:
            if ref not in inline or ref in seen:
                return []
            seen = seen | {ref}
        resolved = self.resolve(target)
        if "properties" not in resolved:
            return []
        return self.fields(resolved, f"{name}{suffix}.", depth, inline=inline, seen=seen)

    def parameter(self, param: Schema) -> Field:
        spec = param.get("schema", {})
        kind, link = self.type_of(spec)
        default = spec.get("default", _MISSING)
        items = spec.get("items", {})
        return Field(
            name=param["name"],
            type=f"{kind}, in the {param['in']}",
            required=bool(param.get("required")),
            default="" if default is _MISSING else json.dumps(default),
            limits=self.limits(spec) + self.limits(items),
            description=param.get("description", ""),
            link=link,
        )

    def answers(self, responses: dict[str, Schema]) -> list[Answer]:
        found = []
        for status, answer in responses.items():
            content = answer.get("content", {})
            kinds = list(content)
            spec = content[kinds[0]].get("schema", {}) if kinds else {}
            kind, link = self.type_of(spec) if spec else ("", "")
            codes = spec.get("properties", {}).get("code", {}).get("enum", [])
            found.append(
                Answer(
                    status=status,
                    description=answer.get("description", ""),
                    content_types=kinds,
                    type=kind,
                    link=link,
                    codes=list(codes),
                    headers=list(answer.get("headers", {})),
                )
            )
        return found

    def callbacks(self, operation: Schema) -> list[Callback]:
        found = []
        for name, expressions in operation.get("callbacks", {}).items():
            for expression, item in expressions.items():
                post = item["post"]
                body = post["requestBody"]["content"]["application/json"]["schema"]
                kind, link = self.type_of(body)
                found.append(
                    Callback(
                        name=name,
                        expression=expression,
                        summary=post.get("summary", ""),
                        description=post.get("description", ""),
                        headers=[self.parameter(p) for p in post.get("parameters", [])],
                        body=kind,
                        link=link,
                        answers=self.answers(post.get("responses", {})),
                    )
                )
        return found

    def operations(self) -> list[Operation]:
        found = []
        for path, item in self.doc["paths"].items():
            for method in METHODS:
                operation = item.get(method)
                if operation is None:
                    continue
                security = operation.get("security", self.doc.get("security", []))
                body = operation.get("requestBody", {}).get("content", {}).get("application/json")
                body_fields = self.fields(body["schema"]) if body else []
                examples = self.resolve(body["schema"]).get("examples", []) if body else []
                found.append(
                    Operation(
                        method=method.upper(),
                        path=path,
                        anchor=operation.get("operationId") or f"{method}-{path}",
                        summary=operation.get("summary", ""),
                        description=operation.get("description", ""),
                        tag=(operation.get("tags") or [""])[0],
                        authenticated=bool(security),
                        parameters=[self.parameter(p) for p in operation.get("parameters", [])],
                        body=body_fields,
                        body_example=json.dumps(examples[0], indent=2) if examples else "",
                        answers=self.answers(operation.get("responses", {})),
                        callbacks=self.callbacks(operation),
                    )
                )
        return found

    def components(self) -> list[tuple[str, str, str, list[Field]]]:
        """(name, anchor, description, fields) of the schemas answers are made of."""
        return [
            (
                name,
                self.anchor(name),
                self.schemas[name].get("description", ""),
                self.fields(self.schemas[name], inline=frozenset()),
            )
            for name in SHOWN_SCHEMAS
        ]


_MISSING = object()


def paragraphs(text: str) -> list[list[tuple[str, bool]]]:
    """The document's description as paragraphs of (text, is code) pieces: `code` spans are
    its only markup."""
    return [
        [(piece, n % 2 == 1) for n, piece in enumerate(block.split("`")) if piece]
        for block in text.split("\n\n")
        if block.strip()
    ]


@require_GET
def api_docs(request: HttpRequest) -> HttpResponse:
    base = base_url(request)
    doc = document(base)
    reader = Reader(doc)
    return render(
        request,
        "api/docs.html",
        {
            "doc": doc,
            "base": base,
            "openapi_url": reverse("api_openapi"),
            "intro": paragraphs(doc["info"].get("description", "")),
            "operations": reader.operations(),
            "components": reader.components(),
        },
    )
