"""Reads the protoc descriptor set that the gateway is generated from: mlmesh services and their
domains, shared by the Envoy config renderer and the OpenAPI generator."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2

# Only services in packages `mlmesh.<domain>.v1` are served; the domain names the upstream.
_SERVICE_NAME = re.compile(r"^mlmesh\.(?P<domain>[a-z][a-z0-9_]*)\.v1\.[A-Z][A-Za-z0-9]*$")


@dataclass(frozen=True)
class ServiceRef:
    """One gRPC service found in the descriptor set."""

    full_name: str
    domain: str
    file: descriptor_pb2.FileDescriptorProto
    proto: descriptor_pb2.ServiceDescriptorProto
    # Index of the service in its file, the key of its comments in `source_code_info`.
    index: int


def load_descriptor_set(path: str | Path) -> descriptor_pb2.FileDescriptorSet:
    """Parses a `--descriptor_set_out` file."""
    return descriptor_pb2.FileDescriptorSet.FromString(Path(path).read_bytes())


def mlmesh_services(descriptor_set: descriptor_pb2.FileDescriptorSet) -> list[ServiceRef]:
    """Every service in an `mlmesh.*` package, sorted by full name.

    A service in an `mlmesh.*` package that is not named `mlmesh.<domain>.v1.<Name>` is an
    error: it would silently go unrouted.
    """
    services = []
    for file in descriptor_set.file:
        if not file.package.startswith("mlmesh."):
            continue
        for index, service in enumerate(file.service):
            full_name = f"{file.package}.{service.name}"
            match = _SERVICE_NAME.match(full_name)
            if match is None:
                raise ValueError(
                    f"service {full_name} is not named mlmesh.<domain>.v1.<Name>; "
                    "the gateway cannot route it"
                )
            services.append(ServiceRef(full_name, match["domain"], file, service, index))
    return sorted(services, key=lambda ref: ref.full_name)
