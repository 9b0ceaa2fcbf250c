"""Generates the OpenAPI 3.1 document of the REST API from the protos' `google.api.http` rules,
as Envoy's transcoder serves them (proto3 JSON mapping, snake_case names, google.rpc.Status errors),
with each RPC's success status and `Location` from its `(mlmesh.api.v1.http_response)` option,
and OpenAPI links between operations from the protos' resource annotations (AIP-123):
every answer that carries a resource's id links to the operations that take that id.

Usage: python -m gateway.openapi DESCRIPTOR_SET OUT_JSON
"""

from __future__ import annotations

import argparse
import json
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2, http_pb2, resource_pb2
from google.protobuf import descriptor_pb2

from gateway.descriptors import ServiceRef, load_descriptor_set, mlmesh_services
from mlmesh.api.v1 import http_pb2 as mlmesh_http_pb2

Schema = dict[str, Any]
FieldProto = descriptor_pb2.FieldDescriptorProto

HTTP_BODY = ".google.api.HttpBody"
BINARY = {"type": "string", "format": "binary"}
JSON = "application/json"

# proto3 JSON mapping of scalar types. 64-bit integers are strings so that JavaScript keeps
# every digit; Envoy's transcoder prints them that way.
_SCALARS: dict[int, Schema] = {
    FieldProto.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldProto.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldProto.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldProto.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldProto.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldProto.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldProto.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldProto.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldProto.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldProto.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldProto.TYPE_BOOL: {"type": "boolean"},
    FieldProto.TYPE_STRING: {"type": "string"},
    FieldProto.TYPE_BYTES: {"type": "string", "format": "byte", "contentEncoding": "base64"},
}


def _nullable(schema: Schema) -> Schema:
    return {**schema, "type": [schema["type"], "null"]}


# Well-known types have their own JSON forms; they are inlined rather than given components.
# Those marked `query=True` are strings or scalars in JSON, so the transcoder takes them as query
# parameters too.
@dataclass(frozen=True)
class _WellKnown:
    schema: Schema
    query: bool = False


_WELL_KNOWN: dict[str, _WellKnown] = {
    ".google.protobuf.Timestamp": _WellKnown(
        {"type": "string", "format": "date-time", "description": "RFC 3339 timestamp."}, True
    ),
    ".google.protobuf.Duration": _WellKnown(
        {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?s$", "description": "e.g. `1.5s`."},
        True,
    ),
    ".google.protobuf.FieldMask": _WellKnown(
        {"type": "string", "description": "Comma-separated field paths."}, True
    ),
    ".google.protobuf.Value": _WellKnown({"description": "Any JSON value, including null."}),
    ".google.protobuf.Struct": _WellKnown({"type": "object", "additionalProperties": True}),
    ".google.protobuf.ListValue": _WellKnown({"type": "array", "items": {}}),
    ".google.protobuf.Empty": _WellKnown({"type": "object", "properties": {}}),
    ".google.protobuf.Any": _WellKnown(
        {
            "type": "object",
            "properties": {"@type": {"type": "string"}},
            "required": ["@type"],
            "additionalProperties": True,
        }
    ),
    HTTP_BODY: _WellKnown(BINARY),
    **{
        f".google.protobuf.{name}": _WellKnown(_nullable(_SCALARS[scalar]), True)
        for name, scalar in {
            "DoubleValue": FieldProto.TYPE_DOUBLE,
            "FloatValue": FieldProto.TYPE_FLOAT,
            "Int64Value": FieldProto.TYPE_INT64,
            "UInt64Value": FieldProto.TYPE_UINT64,
            "Int32Value": FieldProto.TYPE_INT32,
            "UInt32Value": FieldProto.TYPE_UINT32,
            "BoolValue": FieldProto.TYPE_BOOL,
            "StringValue": FieldProto.TYPE_STRING,
            "BytesValue": FieldProto.TYPE_BYTES,
        }.items()
    },
}
_NULL_VALUE_ENUM = ".google.protobuf.NullValue"

# Error responses every operation documents: (HTTP status, component name, description).
_ERRORS = [
    ("400", "BadRequest", "Invalid argument: bad JSON, unknown field or query parameter, limit."),
    ("401", "Unauthenticated", "Missing or invalid bearer token (when the gateway checks JWTs)."),
    ("403", "PermissionDenied", "The resource belongs to another tenant."),
    ("404", "NotFound", "No such resource, or no such path."),
    ("409", "Conflict", "Already exists, or a concurrent change won (stale version)."),
    ("422", "UnprocessableEntity", "Well-formed, but the data cannot support the request."),
    ("503", "Unavailable", "A backend or one of its dependencies is unavailable; retry later."),
    ("default", "Error", "Any other error."),
]

_STATUS_SCHEMA: Schema = {
    "type": "object",
    "description": "google.rpc.Status: the body of every error response.",
    "properties": {
        "code": {"type": "integer", "format": "int32", "description": "google.rpc.Code value."},
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "items": {
                "type": "object",
                "description": "google.rpc.ErrorInfo (other detail types may follow).",
                "properties": {
                    "@type": {"type": "string"},
                    "reason": {"type": "string", "description": "UPPER_SNAKE, e.g. NOT_FOUND."},
                    "domain": {"type": "string"},
                    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                },
                "required": ["@type"],
                "additionalProperties": True,
            },
        },
    },
    "required": ["code", "message"],
}


@dataclass(frozen=True)
class _Resource:
    """A message annotated `(google.api.resource)`. mlmesh's patterns are the resource's REST
    path with one variable, which names the message's id field: `api/v1/experiments/{id}`."""

    type: str
    segments: tuple[str, ...]
    id_field: str

    @classmethod
    def of(cls, descriptor: resource_pb2.ResourceDescriptor) -> _Resource:
        (pattern,) = descriptor.pattern
        segments = tuple(pattern.strip("/").split("/"))
        (variable,) = (s[1:-1] for s in segments if s.startswith("{"))
        return cls(descriptor.type, segments, variable)

    def path_parameter(self, path: str) -> str | None:
        """The parameter of an operation's `path` that takes this resource's id: the path
        starts with the pattern, literal for literal, the variable at the variable's place."""
        segments = path.strip("/").split("/")
        if len(segments) < len(self.segments):
            return None
        name = None
        for mine, theirs in zip(self.segments, segments, strict=False):
            if mine.startswith("{") != theirs.startswith("{"):
                return None
            if mine.startswith("{"):
                name = theirs[1:-1]
            elif mine != theirs:
                return None
        return name


@dataclass
class _Operation:
    """What links need to know of an operation: where its request fields go over REST and
    which message its successes answer."""

    spec: dict[str, Any]
    path: str
    request_type: str
    response_type: str | None
    path_fields: frozenset[str]
    body: str


_PATH_VARIABLE = re.compile(r"\{([^}=]+)(?:=([^}]*))?\}")
_HTTP_VERBS = ("get", "put", "post", "delete", "patch")


def _comment_text(location: descriptor_pb2.SourceCodeInfo.Location) -> str:
    return textwrap.dedent(location.leading_comments).strip()


def _summary(description: str) -> str:
    first_paragraph = description.split("\n\n", 1)[0].replace("\n", " ")
    sentence = re.split(r"(?<=\.)\s", first_paragraph, maxsplit=1)[0]
    return sentence.rstrip(".")


@dataclass
class _Index:
    """Messages, enums and source comments of a descriptor set, by fully qualified name."""

    messages: dict[str, descriptor_pb2.DescriptorProto] = field(default_factory=dict)
    enums: dict[str, descriptor_pb2.EnumDescriptorProto] = field(default_factory=dict)
    comments: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, descriptor_set: descriptor_pb2.FileDescriptorSet) -> _Index:
        index = cls()
        for file in descriptor_set.file:
            comments = {
                tuple(loc.path): _comment_text(loc)
                for loc in file.source_code_info.location
                if loc.leading_comments
            }
            scope = f".{file.package}" if file.package else ""
            for i, message in enumerate(file.message_type):
                index._add_message(message, scope, (4, i), comments)
            for i, enum in enumerate(file.enum_type):
                index._add_enum(enum, scope, (5, i), comments)
            for i, service in enumerate(file.service):
                service_name = f"{scope}.{service.name}"
                index._comment(service_name, comments, (6, i))
                for j, method in enumerate(service.method):
                    index._comment(f"{service_name}.{method.name}", comments, (6, i, 2, j))
        return index

    def _comment(self, name: str, comments: dict[tuple, str], path: tuple) -> None:
        if path in comments:
            self.comments[name] = comments[path]

    def _add_message(self, message, scope: str, path: tuple, comments: dict) -> None:
        name = f"{scope}.{message.name}"
        self.messages[name] = message
        self._comment(name, comments, path)
        for i, message_field in enumerate(message.field):
            self._comment(f"{name}.{message_field.name}", comments, (*path, 2, i))
        for i, nested in enumerate(message.nested_type):
            self._add_message(nested, name, (*path, 3, i), comments)
        for i, enum in enumerate(message.enum_type):
            self._add_enum(enum, name, (*path, 4, i), comments)

    def _add_enum(self, enum, scope: str, path: tuple, comments: dict) -> None:
        name = f"{scope}.{enum.name}"
        self.enums[name] = enum
        self._comment(name, comments, path)


class _Builder:
    """Builds one OpenAPI document; components are added as operations reference them."""

    def __init__(self, descriptor_set: descriptor_pb2.FileDescriptorSet) -> None:
        self.descriptor_set = descriptor_set
        self.index = _Index.of(descriptor_set)
        self.schemas: dict[str, Schema] = {"google.rpc.Status": _STATUS_SCHEMA}
        self.paths: dict[str, dict[str, Any]] = {}
        self.operations: list[_Operation] = []

    # Schemas

    def ref(self, type_name: str) -> Schema:
        """A `$ref` to the component of a message or enum, building the component if new."""
        name = type_name.lstrip(".")
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: breaks reference cycles
            if type_name in self.index.enums:
                self.schemas[name] = self.enum_schema(type_name)
            else:
                self.schemas[name] = self.message_schema(type_name)
        return {"$ref": f"#/components/schemas/{name}"}

    def enum_schema(self, type_name: str) -> Schema:
        enum = self.index.enums[type_name]
        description = self.index.comments.get(type_name, "")
        note = "Parsed case-insensitively on input; printed as the value name."
        return {
            "type": "string",
            "enum": [value.name for value in enum.value],
            "description": f"{description}\n\n{note}".strip(),
        }

    def message_schema(self, type_name: str, *, exclude: frozenset[str] = frozenset()) -> Schema:
        message = self.index.messages[type_name]
        properties = {}
        required = []
        for message_field in message.field:
            if message_field.name in exclude:
                continue
            properties[message_field.name] = self.field_schema(type_name, message_field)
            behaviors = message_field.options.Extensions[field_behavior_pb2.field_behavior]
            if field_behavior_pb2.REQUIRED in behaviors:
                required.append(message_field.name)
        schema: Schema = {"type": "object", "properties": properties}
        if required:
            schema["required"] = required
        if type_name in self.index.comments:
            schema["description"] = self.index.comments[type_name]
        return schema

    def field_schema(self, message_name: str, message_field: FieldProto) -> Schema:
        entry = self._map_entry(message_field)
        if entry is not None:
            schema = {"type": "object", "additionalProperties": self.value_schema(entry.field[1])}
        elif message_field.label == FieldProto.LABEL_REPEATED:
            schema = {"type": "array", "items": self.value_schema(message_field)}
        else:
            schema = self.value_schema(message_field)
        behaviors = message_field.options.Extensions[field_behavior_pb2.field_behavior]
        if field_behavior_pb2.OUTPUT_ONLY in behaviors:
            schema = {**schema, "readOnly": True}
        description = self.index.comments.get(f"{message_name}.{message_field.name}")
        if description:
            schema = {**schema, "description": description}
        return schema

    def value_schema(self, message_field: FieldProto) -> Schema:
        """Schema of one value of a field (an element, for repeated fields)."""
        if message_field.type in _SCALARS:
            return dict(_SCALARS[message_field.type])
        if message_field.type == FieldProto.TYPE_ENUM:
            if message_field.type_name == _NULL_VALUE_ENUM:
                return {"type": "null"}
            return self.ref(message_field.type_name)
        if message_field.type_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message_field.type_name].schema)
        return self.ref(message_field.type_name)

    def _map_entry(self, message_field: FieldProto) -> descriptor_pb2.DescriptorProto | None:
        if message_field.type != FieldProto.TYPE_MESSAGE:
            return None
        message = self.index.messages.get(message_field.type_name)
        return message if message is not None and message.options.map_entry else None

    def _field_at(self, message_name: str, dotted: str) -> tuple[str, FieldProto]:
        """The field a dotted path (`a.b`) names, with the name of the message declaring it."""
        parts = dotted.split(".")
        for depth, part in enumerate(parts):
            message = self.index.messages[message_name]
            found = next((f for f in message.field if f.name == part), None)
            if found is None:
                raise ValueError(f"{message_name.lstrip('.')} has no field {dotted!r}")
            if depth == len(parts) - 1:
                return message_name, found
            message_name = found.type_name
        raise AssertionError("unreachable")

    # Operations

    def add_service(self, service: ServiceRef) -> None:
        service_name = f".{service.full_name}"
        for method in service.proto.method:
            rule = method.options.Extensions[annotations_pb2.http]
            if not rule.WhichOneof("pattern"):
                raise ValueError(f"{service.full_name}.{method.name} has no google.api.http rule")
            bindings = [rule, *rule.additional_bindings]
            for number, binding in enumerate(bindings):
                operation_id = f"{service.proto.name}_{method.name}"
                if number:
                    operation_id += f"_{number}"
                self.add_operation(service, service_name, method, binding, operation_id)

    def add_operation(
        self,
        service: ServiceRef,
        service_name: str,
        method: descriptor_pb2.MethodDescriptorProto,
        rule: http_pb2.HttpRule,
        operation_id: str,
    ) -> None:
        verb, template = _verb_and_template(rule)
        path, path_fields = _openapi_path(template)
        request_type = method.input_type
        parameters = [
            self._path_parameter(request_type, name, multi_segment)
            for name, multi_segment in path_fields
        ]
        bound = {name for name, _ in path_fields}
        if rule.body != "*":
            if rule.body:
                bound.add(rule.body)
            parameters += list(self._query_parameters(request_type, "", bound, ()))
        parameters.append({"$ref": "#/components/parameters/TenantId"})
        if method.options.Extensions[mlmesh_http_pb2.idempotency_key]:
            parameters.append({"$ref": "#/components/parameters/IdempotencyKey"})

        description = self.index.comments.get(f"{service_name}.{method.name}", "")
        operation: dict[str, Any] = {
            "operationId": operation_id,
            "tags": [service.proto.name],
            "parameters": parameters,
            "responses": self._responses(method, rule),
        }
        if description:
            operation["summary"] = _summary(description)
            operation["description"] = description
        if rule.body:
            operation["requestBody"] = self._request_body(request_type, rule.body, bound)

        operations = self.paths.setdefault(path, {})
        if verb in operations:
            raise ValueError(
                f"{verb.upper()} {path} is bound twice "
                f"({operations[verb]['operationId']} and {operation_id})"
            )
        operations[verb] = operation
        response_type = method.output_type
        if rule.response_body:
            response_type = self._field_at(response_type, rule.response_body)[1].type_name
        self.operations.append(
            _Operation(
                operation,
                path,
                request_type,
                response_type,
                frozenset(bound - {rule.body}),
                rule.body,
            )
        )

    def _path_parameter(self, request_type: str, name: str, multi_segment: bool) -> Schema:
        owner, path_field = self._field_at(request_type, name)
        schema = self.value_schema(path_field)
        parameter = {
            "name": _parameter_name(name),
            "in": "path",
            "required": True,
            "schema": schema,
        }
        description = self.index.comments.get(f"{owner}.{path_field.name}", "")
        if multi_segment:
            description = f"{description}\n\nMay contain `/`.".strip()
        if description:
            parameter["description"] = description
        return parameter

    def _query_parameters(
        self, message_name: str, prefix: str, bound: set[str], seen: tuple[str, ...]
    ) -> Iterator[Schema]:
        """Request fields bound neither to the path nor the body, as the transcoder reads them:
        nested message fields flattened with dots, repeated scalars as repeated parameters."""
        for message_field in self.index.messages[message_name].field:
            name = f"{prefix}{message_field.name}"
            if name in bound or self._map_entry(message_field) is not None:
                continue
            is_message = message_field.type == FieldProto.TYPE_MESSAGE
            well_known = _WELL_KNOWN.get(message_field.type_name)
            if is_message and well_known is None:
                if message_field.label == FieldProto.LABEL_REPEATED:
                    continue
                if message_field.type_name not in seen:
                    yield from self._query_parameters(
                        message_field.type_name,
                        f"{name}.",
                        bound,
                        (*seen, message_name),
                    )
                continue
            if is_message and not well_known.query:
                continue
            schema = self.field_schema(message_name, message_field)
            description = schema.pop("description", None)
            parameter = {"name": name, "in": "query", "required": False, "schema": schema}
            if description:
                parameter["description"] = description
            yield parameter

    def _request_body(self, request_type: str, body: str, bound: set[str]) -> Schema:
        if body == "*":
            if request_type == HTTP_BODY:
                return {"required": True, "content": {"*/*": {"schema": BINARY}}}
            path_fields = frozenset(name for name in bound if "." not in name)
            if path_fields:
                schema = self.message_schema(request_type, exclude=path_fields)
                schema.pop("description", None)
            else:
                schema = self.ref(request_type)
            return {"required": True, "content": {JSON: {"schema": schema}}}
        owner, body_field = self._field_at(request_type, body)
        if body_field.type_name == HTTP_BODY and body_field.label != FieldProto.LABEL_REPEATED:
            content = {"*/*": {"schema": BINARY}}
            description = "The raw body, with its Content-Type (multipart included)."
            return {"required": True, "description": description, "content": content}
        # Fields of the body that the path binds (`{request.model_id}`) are not in the body.
        in_path = frozenset(
            name.removeprefix(f"{body}.") for name in bound if name.startswith(f"{body}.")
        )
        if in_path:
            schema = self.message_schema(body_field.type_name, exclude=in_path)
            schema.pop("description", None)
            description = self.index.comments.get(f"{owner}.{body_field.name}")
        else:
            schema = self.field_schema(owner, body_field)
            description = schema.pop("description", None)
        request_body: Schema = {"required": True, "content": {JSON: {"schema": schema}}}
        if description:
            request_body["description"] = description
        return request_body

    def _responses(
        self,
        method: descriptor_pb2.MethodDescriptorProto,
        rule: http_pb2.HttpRule,
    ) -> dict[str, Any]:
        declared = method.options.Extensions[mlmesh_http_pb2.http_response]
        status = str(declared.status or 200)
        responses: dict[str, Any] = {
            code: {"$ref": f"#/components/responses/{name}"} for code, name, _ in _ERRORS
        }
        if status == "204":
            responses[status] = {"description": "Done; no content."}
            return responses
        response_type = method.output_type
        if rule.response_body:
            owner, body_field = self._field_at(response_type, rule.response_body)
            if body_field.type_name == HTTP_BODY:
                content = {"*/*": {"schema": BINARY}}
            else:
                schema = self.field_schema(owner, body_field)
                schema.pop("description", None)
                content = {JSON: {"schema": schema}}
        elif response_type == HTTP_BODY:
            content = {"*/*": {"schema": BINARY}}
        elif response_type in _WELL_KNOWN:
            content = {JSON: {"schema": dict(_WELL_KNOWN[response_type].schema)}}
        else:
            content = {JSON: {"schema": self.ref(response_type)}}
        success: dict[str, Any] = {"description": _STATUS_DESCRIPTIONS[status], "content": content}
        if declared.location:
            success["headers"] = {
                "Location": {
                    "description": f"Path of the resource: `{declared.location}`.",
                    "schema": {"type": "string"},
                }
            }
        responses[status] = success
        for code in declared.instead:
            responses[str(code)] = {
                "description": _STATUS_DESCRIPTIONS[str(code)],
                "content": content,
            }
        return responses

    # Links

    def resource_of(self, type_name: str) -> _Resource | None:
        message = self.index.messages.get(type_name)
        if message is None or not message.options.HasExtension(resource_pb2.resource):
            return None
        return _Resource.of(message.options.Extensions[resource_pb2.resource])

    @staticmethod
    def _reference(message_field: FieldProto) -> str:
        return message_field.options.Extensions[resource_pb2.resource_reference].type

    def produced(self, operation: _Operation) -> dict[str, str]:
        """Resource type -> the runtime expression of an id in the operation's success body:
        the resource itself, the first of a list of them, or a field referencing one."""
        message = self.index.messages.get(operation.response_type or "")
        if message is None:
            return {}
        produced: dict[str, str] = {}
        own = self.resource_of(operation.response_type)
        if own is not None:
            produced[own.type] = f"$response.body#/{own.id_field}"
        for message_field in message.field:
            repeated = message_field.label == FieldProto.LABEL_REPEATED
            listed = self.resource_of(message_field.type_name)
            if listed is not None and repeated:
                pointer = f"{message_field.name}/0/{listed.id_field}"
                produced.setdefault(listed.type, f"$response.body#/{pointer}")
            elif self._reference(message_field):
                pointer = message_field.name + ("/0" if repeated else "")
                produced.setdefault(self._reference(message_field), f"$response.body#/{pointer}")
        return produced

    def references(
        self, message_name: str, prefix: str = "", seen: tuple[str, ...] = ()
    ) -> Iterator[tuple[str, FieldProto]]:
        """(dotted path, field) of every field of a request that references a resource."""
        for message_field in self.index.messages[message_name].field:
            name = f"{prefix}{message_field.name}"
            if self._reference(message_field):
                yield name, message_field
            elif (
                message_field.type == FieldProto.TYPE_MESSAGE
                and message_field.type_name in self.index.messages
                and message_field.type_name not in seen
                and self._map_entry(message_field) is None
                and message_field.label != FieldProto.LABEL_REPEATED
            ):
                yield from self.references(
                    message_field.type_name, f"{name}.", (*seen, message_name)
                )

    def consumed(self, operation: _Operation, resource_type: str, value: str) -> dict[str, Any]:
        """The link fields (`parameters`, `requestBody`) that pass `value`, an id of
        `resource_type`, to `operation`; empty when it takes no such id."""
        parameters: dict[str, str] = {}
        body: Any = None
        resource = self._resources.get(resource_type)
        name = resource and resource.path_parameter(operation.path)
        if name:
            parameters[f"path.{name}"] = value
        for dotted, message_field in self.references(operation.request_type):
            if self._reference(message_field) != resource_type:
                continue
            item: Any = [value] if message_field.label == FieldProto.LABEL_REPEATED else value
            if dotted in operation.path_fields:
                parameters[f"path.{_parameter_name(dotted)}"] = value
            elif operation.body == "*" or dotted.startswith(f"{operation.body}."):
                within = dotted if operation.body == "*" else dotted[len(operation.body) + 1 :]
                body = _merge(body, _nested(within.split("."), item))
            elif dotted == operation.body:
                body = item
            else:
                parameters[f"query.{dotted}"] = value
        link: dict[str, Any] = {}
        if parameters:
            link["parameters"] = parameters
        if body is not None:
            link["requestBody"] = body
        return link

    def add_links(self) -> None:
        self._resources = {
            resource.type: resource
            for name in self.index.messages
            if (resource := self.resource_of(name)) is not None
        }
        for source in self.operations:
            produced = self.produced(source)
            links: dict[str, Any] = {}
            for target in self.operations:
                if target is source:
                    continue
                link: dict[str, Any] = {}
                for resource_type, value in produced.items():
                    found = self.consumed(target, resource_type, value)
                    link.setdefault("parameters", {}).update(found.get("parameters", {}))
                    if "requestBody" in found:
                        link["requestBody"] = _merge(link.get("requestBody"), found["requestBody"])
                if not link.get("parameters"):
                    link.pop("parameters", None)
                if link:
                    links[target.spec["operationId"]] = {
                        "operationId": target.spec["operationId"],
                        **link,
                    }
            if not links:
                continue
            for code, response in source.spec["responses"].items():
                if code.startswith("2") and "content" in response:
                    response["links"] = links

    # Document

    def document(self) -> dict[str, Any]:
        services = mlmesh_services(self.descriptor_set)
        for service in services:
            self.add_service(service)
        self.add_links()
        tags = []
        for service in services:
            tag = {"name": service.proto.name}
            comment = self.index.comments.get(f".{service.full_name}")
            if comment:
                tag["description"] = comment
            tags.append(tag)
        responses = {
            name: {
                "description": description,
                "content": {JSON: {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}},
            }
            for _, name, description in _ERRORS
        }
        return {
            "openapi": "3.1.0",
            "info": {
                "title": "mlmesh API",
                "version": "v1",
                "description": (
                    "REST view of the mlmesh gRPC services, transcoded by the Envoy gateway. "
                    "JSON uses proto field names; 64-bit integers are strings; errors are "
                    "google.rpc.Status objects with an ErrorInfo detail."
                ),
            },
            "servers": [{"url": "/"}],
            "tags": sorted(tags, key=lambda tag: tag["name"]),
            "security": [{}, {"bearerAuth": []}],
            "paths": self.paths,
            "components": {
                "schemas": self.schemas,
                "responses": responses,
                "parameters": {
                    "TenantId": {
                        "name": "x-tenant-id",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": (
                            "Caller's tenant (default `default`). Ignored when the gateway "
                            "authenticates: the token's `tenant_id` claim decides."
                        ),
                    },
                    "IdempotencyKey": {
                        "name": "x-idempotency-key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
                        "description": (
                            "Makes a retry safe: a repeat of the call with the same key (per "
                            "tenant, kept for a bounded time) answers the first call's answer and "
                            "writes nothing new; the same key with another request is 400."
                        ),
                    },
                },
                "securitySchemes": {
                    "bearerAuth": {
                        "type": "http",
                        "scheme": "bearer",
                        "bearerFormat": "JWT",
                        "description": "Required when the gateway runs with MLMESH_AUTH=jwt.",
                    }
                },
            },
        }


_STATUS_DESCRIPTIONS = {
    "200": "OK.",
    "201": "Created; `Location` names the new resource.",
    "202": "Accepted; the work continues in the background.",
}


def _verb_and_template(rule: http_pb2.HttpRule) -> tuple[str, str]:
    pattern = rule.WhichOneof("pattern")
    if pattern == "custom":
        verb = rule.custom.kind.lower()
        if verb not in (*_HTTP_VERBS, "head", "options"):
            raise ValueError(f"unsupported custom HTTP verb {rule.custom.kind!r}")
        return verb, rule.custom.path
    return pattern, getattr(rule, pattern)


def _openapi_path(template: str) -> tuple[str, list[tuple[str, bool]]]:
    """`/runs/{run_id}/artifacts/{path=**}` → `/runs/{run_id}/artifacts/{path}` and its fields,
    each with whether it may span several segments. A nested field (`{request.model_id}`, the
    wrapped request of an async RPC) is named by its last part."""
    fields: list[tuple[str, bool]] = []

    def replace(match: re.Match[str]) -> str:
        name, segments = match[1], match[2] or "*"
        fields.append((name, "**" in segments or "/" in segments))
        return "{" + _parameter_name(name) + "}"

    return _PATH_VARIABLE.sub(replace, template), fields


def _nested(path: list[str], value: Any) -> Any:
    for part in reversed(path):
        value = {part: value}
    return value


def _merge(into: Any, extra: Any) -> Any:
    if isinstance(into, dict) and isinstance(extra, dict):
        return {**into, **{k: _merge(into.get(k), v) for k, v in extra.items()}}
    return extra


def _parameter_name(field_path: str) -> str:
    return field_path.rsplit(".", 1)[-1]


def build_document(descriptor_set: descriptor_pb2.FileDescriptorSet) -> dict[str, Any]:
    """The OpenAPI 3.1 document for every `mlmesh.*` service in `descriptor_set`."""
    return _Builder(descriptor_set).document()


def render(descriptor_set: descriptor_pb2.FileDescriptorSet) -> str:
    """The document as stable JSON (sorted keys), so that regenerating it diffs cleanly."""
    return json.dumps(build_document(descriptor_set), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("descriptor_set", type=Path, help="protoc --descriptor_set_out file")
    parser.add_argument("out", type=Path, help="where to write the OpenAPI JSON")
    args = parser.parse_args(argv)
    document = render(load_descriptor_set(args.descriptor_set))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(document)


if __name__ == "__main__":
    main()
