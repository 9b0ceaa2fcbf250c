"""Schemathesis runs of the gateway's own OpenAPI document, shared by every service's suite:
`fuzz_suite` gives a service the same three tests as every other, `fuzz_stateful` runs the
state machine over the whole document."""

from __future__ import annotations

import collections
import os
import random
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ensure_resource_availability,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def fuzz_api(
    base_url: str,
    path_regex: str,
    *,
    min_operations: int,
    max_examples: int,
    headers: dict[str, str] | None = None,
    seed: int | None = None,
) -> None:
    """Fuzzes every operation whose path matches `path_regex`: no answer may be a 5xx or stray
    from the document. Fails unless both accepted and refused requests were seen, so that a
    run that never reached the service cannot pass. Derandomized unless a `seed` is given."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json")
    operations = [
        result.ok() for result in schema.include(path_regex=path_regex).get_all_operations()
    ]
    assert len(operations) >= min_operations, [op.label for op in operations]
    statuses: list[int] = []
    for operation in operations:
        # A seeded run also sends cases that break the schema (wrong types, missing fields).
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if seed is not None else [])
        strategy = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in modes))

        @given(case=strategy)
        @settings(
            max_examples=max_examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=seed is None,
            database=None,
        )
        def fuzz(case):
            response = case.call_and_validate(base_url=base_url, headers=headers, checks=CHECKS)
            statuses.append(response.status_code)

        (fuzz if seed is None else hypothesis_seed(seed)(fuzz))()
    assert any(code < 300 for code in statuses) and any(400 <= code < 500 for code in statuses)


# `use_after_free` is not among them: DELETE of an experiment archives it, and the archive stays
# readable by id (API.md).
STATEFUL_CHECKS = [*CHECKS, ensure_resource_availability]


@dataclass
class StatefulRun:
    """What a stateful run did: answers by (operation, status), the calls that a link fed with
    an id from an earlier answer and that succeeded, and every check that failed."""

    statuses: collections.Counter = dataclass_field(default_factory=collections.Counter)
    linked: collections.Counter = dataclass_field(default_factory=collections.Counter)
    failures: list[str] = dataclass_field(default_factory=list)
    scenarios: int = 0
    restarts: int = 0


class _BudgetSpent(Exception):
    """Ends a stateful run once its time is up: a bound, not a failure."""


def fuzz_stateful(
    base_url: str,
    *,
    headers: dict[str, str],
    seed: int,
    scenarios: int,
    steps: int,
    budget_s: float,
) -> StatefulRun:
    """Schemathesis' state machine over the whole document through the gateway: `scenarios`
    of up to `steps` calls chained by the document's own links (an id from one answer goes
    into the next call), or fewer if `budget_s` runs out first. Each answer is checked as
    `fuzz_api` checks it, and a 404 for what a link says was just created fails too.

    Hypothesis draws from `seed`. The services' state changes under it, so a scenario cannot
    always be drawn again alike: Hypothesis then gives up on the run (FlakyStrategyDefinition),
    and a new run goes on from `seed + 1`. Failures are recorded as they happen, so none is
    lost to that."""
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json")
    # Only the document's links: they are what is under test, not schemathesis' guesses.
    schema.config.phases.stateful.inference.algorithms = []
    # No NUL characters: every service refuses them (the stateless runs check that), and a
    # refused create leaves nothing for the links to chain.
    schema.config.generation.update(allow_x00=False)
    run = StatefulRun()
    deadline = time.monotonic() + budget_s

    class Workflow(schema.as_state_machine()):
        def setup(self):
            if time.monotonic() > deadline or run.scenarios >= scenarios:
                raise _BudgetSpent
            run.scenarios += 1

        def get_call_kwargs(self, case):
            return {"base_url": base_url, "headers": headers, "timeout": 60}

        def step(self, input):
            output = super().step(input)
            linked = input.transition is not None and input.applied_parameters
            if linked and output.response.status_code < 300:
                run.linked[input.case.operation.label] += 1
            return output

        def validate_response(self, response, case, additional_checks=None, **kwargs):
            run.statuses[case.operation.label, response.status_code] += 1
            try:
                case.validate_response(
                    response,
                    checks=STATEFUL_CHECKS,
                    transport_kwargs=kwargs,
                    recorder=self.recorder,
                )
            except AssertionError as failure:
                run.failures.append(f"{case.as_curl_command()}\n{failure}")
                raise

    while run.scenarios < scenarios and time.monotonic() < deadline:
        hypothesis_seed(seed + run.restarts)(Workflow)
        try:
            Workflow.run(
                settings=settings(
                    max_examples=scenarios - run.scenarios,
                    stateful_step_count=steps,
                    phases=[Phase.generate],
                    deadline=None,
                    suppress_health_check=list(HealthCheck),
                    database=None,
                )
            )
        except _BudgetSpent:
            break
        except FlakyStrategyDefinition:
            run.restarts += 1
    return run


def fuzz_seed() -> int:
    """A new seed for each run (or `MLMESH_FUZZ_SEED`'s), printed so that a failure replays."""
    seed = int(os.environ.get("MLMESH_FUZZ_SEED") or random.randrange(2**32))
    print(f"fuzz seed {seed}; replay with MLMESH_FUZZ_SEED={seed}")
    return seed


# A value of each JSON type: every body field gets each one that its schema does not allow.
WRONG_VALUES = {"object": {"k": 1}, "array": [1], "number": 1.5, "string": "x", "boolean": True}


def _resolve(document: dict, schema: dict) -> dict:
    while "$ref" in schema:
        target = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    return schema


def _wrong_bodies(document: dict, schema: dict) -> list[dict]:
    """One body per (field, wrong JSON type), for the top-level fields and the values of
    map fields (`additionalProperties`)."""
    bodies = []
    for name, field in _resolve(document, schema).get("properties", {}).items():
        field = _resolve(document, field)
        if field.get("readOnly") or field.get("description", "").startswith("Output only"):
            continue  # ignored on input, whatever its type
        declared = field.get("type")
        extra = field.get("additionalProperties")
        values = _resolve(document, extra) if isinstance(extra, dict) else {}
        for kind, wrong in WRONG_VALUES.items():
            if kind != declared and not (kind == "number" and declared == "integer"):
                bodies.append({name: wrong})
            if values and kind != values.get("type"):
                bodies.append({name: {"k": wrong}})
    return bodies


def fuzz_wrong_types(
    base_url: str, path_regex: str, *, min_operations: int, headers: dict | None = None
) -> None:
    """Every JSON-bodied operation whose path matches `path_regex`, each body field (and each
    map's values) given every JSON type its schema does not allow: the answer is a 4xx, never
    a 5xx (a corrupt message must not reach a service as an internal error)."""
    document = requests.get(f"{base_url}/api/v1/openapi.json", timeout=10).json()
    operations = 0
    failures = []
    for path, methods in document["paths"].items():
        if not re.search(path_regex, path):
            continue
        url = base_url + re.sub(r"\{[^}]+\}", str(uuid.uuid4()), path.replace("=**", ""))
        for method, operation in methods.items():
            body = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if body is None:
                continue
            operations += 1
            for wrong in _wrong_bodies(document, body["schema"]):
                response = requests.request(method, url, json=wrong, headers=headers, timeout=30)
                if not 400 <= response.status_code < 500:
                    failures.append((method.upper(), path, wrong, response.status_code))
    assert operations >= min_operations, operations
    assert not failures, failures


@dataclass(frozen=True)
class FuzzTarget:
    """One service's part of the document, and the gateway fixture that serves it."""

    gateway_fixture: str
    path_regex: str
    # Fewer operations found means the document lost some: a run over nothing cannot pass.
    min_operations: int
    min_body_operations: int
    max_examples: int
    seeded_examples: int
    # Calls in tenants of their own; the tracking service's seeded runs are the default's.
    own_tenants: bool = True

    def headers(self, tenant: str) -> dict[str, str] | None:
        return {"x-tenant-id": tenant} if self.own_tenants else None


def fuzz_suite(target: FuzzTarget) -> tuple[Callable[..., None], ...]:
    """The three tests every service's test_schemathesis.py holds: a derandomized run, a run
    with a new seed each time (printed; `MLMESH_FUZZ_SEED` replays it), and every body field
    given each JSON type its schema does not allow."""

    def fuzz(request, max_examples: int, tenant: str, seed: int | None = None) -> None:
        gateway = request.getfixturevalue(target.gateway_fixture)
        fuzz_api(
            gateway.base_url,
            target.path_regex,
            min_operations=target.min_operations,
            max_examples=max_examples,
            headers=target.headers(tenant),
            seed=seed,
        )

    def test_api_never_5xx(request):
        fuzz(request, target.max_examples, "fuzz")

    def test_api_never_5xx_with_a_new_seed_each_run(request):
        # Each run explores other cases than the fixed one above; the printed seed replays one.
        fuzz(request, target.seeded_examples, "fuzz-seeded", fuzz_seed())

    def test_every_body_field_of_a_wrong_type_is_a_4xx(request):
        gateway = request.getfixturevalue(target.gateway_fixture)
        fuzz_wrong_types(
            gateway.base_url,
            target.path_regex,
            min_operations=target.min_body_operations,
            headers={"x-tenant-id": "fuzz-types"},
        )

    return (
        test_api_never_5xx,
        test_api_never_5xx_with_a_new_seed_each_run,
        test_every_body_field_of_a_wrong_type_is_a_4xx,
    )
