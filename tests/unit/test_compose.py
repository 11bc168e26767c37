"""Static checks of docker-compose.yml, the Dockerfile it builds and deploy/prometheus.yml, without a Docker engine.

The compose file is parsed with PyYAML, its ``${...}`` references are substituted the way compose does it (after
parsing, in values only), and the result is validated against the official compose-spec JSON schema and
against the deployment rules sift relies on (one GPU per worker, healthy Redis first, no leaked secret, nothing
published beyond loopback by default, Prometheus scraping the ports the workers are given, each service's image
holding the extras its command needs...).

``data/compose-spec.json`` is vendored verbatim from https://github.com/compose-spec/compose-spec,
file ``schema/compose-spec.json`` at commit 00655e2222608fa6eaecdf12ac5195889ca2244a.

When the ``docker`` CLI has the compose plugin, ``docker compose config -q`` is run as well (it needs no
engine); otherwise that one test is skipped.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import Draft7Validator

from producers.sinks.dsn import parse_postgres_url
from producers.sinks.targets import SinkKind, parse_target

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
PYPROJECT = REPO_ROOT / "pyproject.toml"
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "compose-spec.json"

# Values no real deployment would use, so finding them in the file would mean a hard-coded secret.
TEST_PASSWORD = "t3st-Redis-pw-9f2c"
TEST_FLOWER_AUTH = "admin:t3st-flower-pw-41aa"
TEST_API_KEYS = "t3st-api-key-0123456789abcdef"
TEST_WEBHOOK_SECRET = "t3st-webhook-secret-77b1"
TEST_PG_PASSWORD = "t3st-Postgres-pw-5e0d"
TEST_ENV: dict[str, str] = {
    "REDIS_PASSWORD": TEST_PASSWORD,
    "FLOWER_BASIC_AUTH": TEST_FLOWER_AUTH,
    "SIFT_API_KEYS": TEST_API_KEYS,
    "SIFT_WEBHOOK_SECRET": TEST_WEBHOOK_SECRET,
    "POSTGRES_PASSWORD": TEST_PG_PASSWORD,
}

HF_CACHE = "/home/sift/.cache/huggingface"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
# Services of the stack a plain `docker compose up -d` starts, and the profiled ones.
DEFAULT_SERVICES = {"redis", "worker-gpu0", "worker-gpu1", "ingress", "deliver", "postgres", "prometheus", "flower"}
PROFILED_SERVICES = {"worker-cpu": "cpu", "backfill": "backfill"}
# Long-running servers whose readiness others can wait on: each must have a healthcheck.
HEALTH_CHECKED = {"redis", "ingress", "postgres", "prometheus"}
# The optional dependencies each `sift` subcommand a service runs needs in its image (pyproject's extras).
EXTRAS_BY_SUBCOMMAND: dict[str, set[str]] = {
    "worker": {"worker"},
    "workers": {"worker"},
    "ingress": {"ingress"},
    "deliver": {"delivery"},
    # A backfill can write to PostgreSQL or Parquet.
    "backfill": {"sinks"},
}

# --------------------------------------------------------------------------------------------------
# Compose-style variable interpolation
# --------------------------------------------------------------------------------------------------


class InterpolationError(ValueError):
    """A ``${VAR:?msg}`` whose variable is missing, or a malformed ``$`` reference."""


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


def _matching_brace(text: str, start: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``start`` (nested ``${...}`` allowed in defaults)."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
    raise InterpolationError(f"invalid interpolation format in {text!r}: unclosed '${{'")


def _substitute(expr: str, env: Mapping[str, str], whole: str) -> str:
    """Evaluate the inside of one ``${...}``."""
    name_match = _NAME.match(expr)
    if name_match is None:
        raise InterpolationError(f"invalid interpolation format in {whole!r}: ${{{expr}}}")
    name, rest = name_match.group(), expr[name_match.end() :]
    value = env.get(name)
    if rest == "":
        return value or ""
    operator = next((op for op in _OPERATORS if rest.startswith(op)), None)
    if operator is None:
        raise InterpolationError(f"invalid interpolation format in {whole!r}: ${{{expr}}}")
    arg = rest[len(operator) :]
    is_set = value is not None and (value != "" or ":" not in operator)
    if operator in (":-", "-"):
        return value if is_set and value is not None else interpolate(arg, env)
    if operator in (":?", "?"):
        if not is_set or value is None:
            raise InterpolationError(f"required variable {name} is missing a value: {interpolate(arg, env)}")
        return value
    return interpolate(arg, env) if is_set else ""  # ":+" and "+"


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Substitute variables in one string, as compose does.

    Handles ``$$``, ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?msg}``, ``${VAR?msg}``,
    ``${VAR:+alt}`` and ``${VAR+alt}``; a ``$`` followed by anything else is an error, as in compose.
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            end = _matching_brace(text, i + 1)
            out.append(_substitute(text[i + 2 : end], env, text))
            i = end + 1
        elif (name_match := _NAME.match(text, i + 1)) is not None:
            out.append(env.get(name_match.group()) or "")
            i = name_match.end()
        else:
            raise InterpolationError(f"invalid interpolation format in {text!r}: lone '$' (write '$$')")
    return "".join(out)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value (not mapping keys) of a parsed YAML document, returning a copy."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env) for value in node]
    return node


def iter_strings(node: Any) -> list[str]:
    """Every string value (not mapping keys) of a parsed YAML document."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for value in node.values() for text in iter_strings(value)]
    if isinstance(node, list):
        return [text for value in node for text in iter_strings(value)]
    return []


def load_compose(env: Mapping[str, str]) -> dict[str, Any]:
    """Parse docker-compose.yml (anchors and ``<<`` merges resolved), then interpolate it with ``env``."""
    return interpolate_tree(raw_compose(), env)


@functools.cache
def raw_text() -> str:
    return COMPOSE_FILE.read_text(encoding="utf-8")


@functools.cache
def _raw_compose_cached() -> dict[str, Any]:
    doc = yaml.safe_load(raw_text())
    assert isinstance(doc, dict), "docker-compose.yml must be a mapping"
    return doc


def raw_compose() -> dict[str, Any]:
    """The parsed but not interpolated file (a fresh copy: tests may mutate it)."""
    return copy.deepcopy(_raw_compose_cached())


@functools.cache
def _compose_cached() -> dict[str, Any]:
    return load_compose(TEST_ENV)


@pytest.fixture
def compose() -> dict[str, Any]:
    return copy.deepcopy(_compose_cached())


@functools.cache
def _validator() -> Draft7Validator:
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema)


def schema_errors(doc: Mapping[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in _validator().iter_errors(doc)]


# --------------------------------------------------------------------------------------------------
# Small helpers over the parsed file
# --------------------------------------------------------------------------------------------------


def services(doc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return doc["services"]


def worker_names(doc: Mapping[str, Any]) -> list[str]:
    return sorted(name for name, svc in services(doc).items() if command_of(svc)[:2] == ["sift", "worker"])


def gpu_worker_names(doc: Mapping[str, Any]) -> list[str]:
    return sorted(name for name in worker_names(doc) if device_reservations(services(doc)[name]))


def command_of(service: Mapping[str, Any]) -> list[str]:
    command = service.get("command")
    if command is None:
        return []
    return command.split() if isinstance(command, str) else [str(part) for part in command]


def option(command: list[str], flag: str) -> str | None:
    """Value of ``--flag VALUE`` or ``--flag=VALUE`` in an argv list."""
    for i, part in enumerate(command):
        if part == flag and i + 1 < len(command):
            return command[i + 1]
        if part.startswith(flag + "="):
            return part[len(flag) + 1 :]
    return None


def device_reservations(service: Mapping[str, Any]) -> list[dict[str, Any]]:
    deploy = service.get("deploy") or {}
    return list(deploy.get("resources", {}).get("reservations", {}).get("devices", []) or [])


def environment_of(service: Mapping[str, Any]) -> dict[str, str | None]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
        return dict(pairs)
    return {key: None if value is None else str(value) for key, value in env.items()}


def published_host_ip(port: Any) -> str:
    """The host address a ``ports`` entry binds; ``0.0.0.0`` when it binds every interface."""
    if isinstance(port, dict):
        return str(port.get("host_ip") or "0.0.0.0")
    spec = str(port).split("/", 1)[0]
    if spec.startswith("["):  # [::1]:8080:80
        return spec[1 : spec.index("]")]
    parts = spec.split(":")
    return parts[0] if len(parts) == 3 and parts[0] else "0.0.0.0"


def published_ports(port: Any) -> str:
    if isinstance(port, dict):
        return str(port.get("published", ""))
    spec = str(port).split("/", 1)[0]
    if spec.startswith("["):
        spec = spec[spec.index("]") + 2 :]
    parts = spec.split(":")
    return parts[-2] if len(parts) >= 2 else ""


def duration_s(text: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts, f"not a compose duration: {text!r}"
    assert "".join(n + u for n, u in parts) == text, f"not a compose duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


# --------------------------------------------------------------------------------------------------
# The interpolation helper itself
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("plain", "plain"),
        ("${A}", "a"),
        ("$A/x", "a/x"),
        ("${MISSING}", ""),
        ("${MISSING:-dflt}", "dflt"),
        ("${EMPTY:-dflt}", "dflt"),
        ("${EMPTY-dflt}", ""),
        ("${MISSING-dflt}", "dflt"),
        ("${A:-dflt}", "a"),
        ("${A:?must be set}", "a"),
        ("${EMPTY?may be empty}", ""),
        ("${A:+alt}", "alt"),
        ("${MISSING:+alt}", ""),
        ("${MISSING:-${A}}", "a"),
        ("$$A and $${A}", "$A and ${A}"),
        ("redis://:${A}@redis:6379/0", "redis://:a@redis:6379/0"),
    ],
)
def test_interpolate(template: str, expected: str) -> None:
    assert interpolate(template, {"A": "a", "EMPTY": ""}) == expected


@pytest.mark.parametrize(
    ("template", "env"),
    [("${MISSING:?give it}", {}), ("${EMPTY:?give it}", {"EMPTY": ""}), ("${MISSING?give it}", {})],
)
def test_interpolate_required_missing_raises(template: str, env: dict[str, str]) -> None:
    with pytest.raises(InterpolationError, match="is missing a value: give it"):
        interpolate(template, env)


@pytest.mark.parametrize("template", ["cost $5", "${}", "${A", "${A!x}", "trailing $"])
def test_interpolate_rejects_malformed(template: str) -> None:
    with pytest.raises(InterpolationError, match="invalid interpolation format"):
        interpolate(template, {"A": "a"})


# --------------------------------------------------------------------------------------------------
# More helpers: healthchecks, dependencies, Prometheus, the Dockerfile
# --------------------------------------------------------------------------------------------------


def header_comment() -> str:
    """The comment block at the top of the file, before the first YAML key."""
    lines: list[str] = []
    for line in raw_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


def required_variables() -> set[str]:
    """Variables the file requires (``${VAR:?msg}`` or ``${VAR?msg}``)."""
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?", raw_text()))


def has_healthcheck(service: Mapping[str, Any]) -> bool:
    check = service.get("healthcheck") or {}
    test = check.get("test")
    disabled = check.get("disable") in (True, "true") or (isinstance(test, list) and test[:1] == ["NONE"])
    return bool(test) and not disabled


def healthcheck_text(service: Mapping[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def depends_on(service: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return dict(deps)


def container_port(port: Any) -> str:
    if isinstance(port, dict):
        return str(port.get("target", ""))
    return str(port).split("/", 1)[0].rsplit(":", 1)[-1]


def metrics_port_of(service: Mapping[str, Any]) -> int:
    value = environment_of(service).get("SIFT_METRICS_PORT")
    assert value is not None, "no SIFT_METRICS_PORT"
    return int(value)


def prometheus_config_path(compose: Mapping[str, Any]) -> Path:
    """The host file mounted as Prometheus' --config.file."""
    prometheus = services(compose)["prometheus"]
    config_file = option(command_of(prometheus), "--config.file")
    assert config_file is not None, "prometheus has no --config.file"
    mounts = [str(v).split(":") for v in prometheus.get("volumes", [])]
    sources = [m[0] for m in mounts if len(m) >= 2 and m[1] == config_file]
    assert sources, f"nothing is mounted at {config_file}"
    assert sources[0].startswith("./"), f"mount the config from the repository, got {sources[0]}"
    return REPO_ROOT / sources[0]


def load_prometheus_config(compose: Mapping[str, Any]) -> dict[str, Any]:
    doc = yaml.safe_load(prometheus_config_path(compose).read_text(encoding="utf-8"))
    assert isinstance(doc, dict), "the Prometheus config must be a mapping"
    return doc


def scrape_targets(prom: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """(job, host, port) of every target, static or DNS-discovered."""
    found: list[tuple[str, str, int]] = []
    for job in prom.get("scrape_configs") or []:
        for static in job.get("static_configs") or []:
            for target in static.get("targets") or []:
                host, _, port = str(target).rpartition(":")
                found.append((job["job_name"], host, int(port)))
        for dns in job.get("dns_sd_configs") or []:
            assert dns.get("type", "SRV") == "A", f"{job['job_name']}: use type A (Docker's DNS has no SRV records)"
            found.extend((job["job_name"], str(name), int(dns["port"])) for name in dns.get("names") or [])
    return found


def scrape_problems(compose: Mapping[str, Any], prom: Mapping[str, Any]) -> list[str]:
    """What is wrong with Prometheus' targets for this compose file (empty when nothing is)."""
    problems: list[str] = []
    svcs = services(compose)
    targets = scrape_targets(prom)
    if not targets:
        return ["no scrape target at all"]
    for job, host, port in targets:
        if "." in host:  # an IP address or a domain name: a worker on another machine
            continue
        if host not in svcs:
            problems.append(f"{job}: {host}:{port} is not a compose service")
            continue
        if host in worker_names(compose):
            expected = metrics_port_of(svcs[host])
        elif host == "ingress":
            expected = int(option(command_of(svcs[host]), "--port") or 0)
        else:
            problems.append(f"{job}: {host} serves no sift metrics")
            continue
        if port != expected:
            problems.append(f"{job}: {host}:{port}, but {host} serves metrics on {expected}")
    scraped = {host for _, host, _ in targets}
    problems += [f"{name} is never scraped" for name in [*worker_names(compose), "ingress"] if name not in scraped]
    return problems


@functools.cache
def dockerfile_instructions() -> tuple[str, ...]:
    """Instructions of the Dockerfile, continuation lines joined, comments and blank lines dropped."""
    joined: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].strip() + " "
            continue
        joined.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends with a continuation line"
    return tuple(joined)


@functools.cache
def dockerfile_stages() -> dict[str, tuple[str, list[str]]]:
    """Stage name -> (what it is FROM, its instructions)."""
    stages: dict[str, tuple[str, list[str]]] = {}
    current: list[str] | None = None
    for instruction in dockerfile_instructions():
        match = re.fullmatch(r"FROM\s+(\S+)(?:\s+AS\s+(\S+))?", instruction, re.IGNORECASE)
        if match:
            name = match.group(2) or str(len(stages))
            current = []
            stages[name] = (match.group(1), current)
        else:
            assert current is not None, f"instruction before FROM: {instruction}"
            current.append(instruction)
    return stages


def stage_chain(target: str) -> list[str]:
    """The stage and the stages it is built FROM, base first."""
    stages = dockerfile_stages()
    chain = [target]
    while stages[chain[0]][0] in stages:
        chain.insert(0, stages[chain[0]][0])
    return chain


def stage_instructions(target: str) -> list[str]:
    return [line for name in stage_chain(target) for line in dockerfile_stages()[name][1]]


def installed_extras(target: str) -> set[str]:
    """Extras of sift a target installs (``pip install ".[a,b]"``)."""
    extras: set[str] = set()
    for line in stage_instructions(target):
        for group in re.findall(r"pip install \"?\.\[([^\]]*)\]", line):
            extras |= {extra.strip() for extra in group.split(",")}
    return extras


@functools.cache
def pyproject() -> dict[str, Any]:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))


def build_target(service: Mapping[str, Any]) -> str | None:
    build = service.get("build")
    return build.get("target") if isinstance(build, dict) else None


# --------------------------------------------------------------------------------------------------
# Required variables
# --------------------------------------------------------------------------------------------------


def test_the_required_variables_are_the_documented_ones() -> None:
    """What the file requires, what the tests supply, the header's list and its .env recipe agree."""
    required = required_variables()
    assert required == set(TEST_ENV), f"required in the file: {sorted(required)}; the tests supply {sorted(TEST_ENV)}"
    header = header_comment()
    block = header.split("Required variables", 1)[1].split("Optional:", 1)[0]
    assert set(re.findall(r"^#\s+([A-Z][A-Z0-9_]+)\s", block, re.MULTILINE)) == required, block
    recipe = next(line for line in header.splitlines() if "printf" in line)
    assert set(re.findall(r"([A-Z][A-Z0-9_]+)=", recipe)) == required, recipe


@pytest.mark.parametrize("variable", sorted(TEST_ENV))
@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_a_missing_required_variable_is_refused(variable: str, value: str | None) -> None:
    env = {key: val for key, val in TEST_ENV.items() if key != variable}
    if value is not None:
        env[variable] = value
    with pytest.raises(InterpolationError, match=rf"{variable} is missing a value: set {variable}"):
        load_compose(env)


@pytest.mark.parametrize("variable", sorted(TEST_ENV))
def test_every_reference_to_a_secret_is_required(variable: str) -> None:
    """Each ``${SECRET...}`` uses ``:?``, so no code path silently runs without it (or with it empty)."""
    references = re.findall(rf"\$\{{{variable}([^}}]*)\}}", raw_text())
    assert references, f"{variable} is never referenced"
    assert all(ref.startswith(":?") for ref in references), references


def test_secrets_are_never_literals() -> None:
    text = raw_text()
    for value in TEST_ENV.values():
        assert value not in text
    # Every redis:// URL in a value (comments aside) takes its password from the variable.
    urls = [url for value in iter_strings(raw_compose()) for url in re.findall(r"redis://\S*", value)]
    assert urls, "no redis:// URL found"
    for url in urls:
        assert url.startswith("redis://:${REDIS_PASSWORD"), url
    # No postgresql:// URL carries a password: libpq reads it from PGPASSWORD.
    for value in iter_strings(raw_compose()):
        for url in re.findall(r"postgres(?:ql)?://\S*", value):
            assert urlsplit(url).password is None, url
    # So does --requirepass, and the container-side variable used by the healthcheck.
    redis = raw_compose()["services"]["redis"]
    command = command_of(redis)
    requirepass = option(command, "--requirepass")
    assert requirepass is not None, command
    assert requirepass.startswith("${REDIS_PASSWORD:?"), command
    for name, service in raw_compose()["services"].items():
        for key, value in environment_of(service).items():
            if any(word in key for word in ("PASSWORD", "AUTH", "KEY", "SECRET")):
                assert value is None or value.startswith("${"), f"{name}: {key} is a literal"


@pytest.mark.parametrize(
    ("service", "key", "value"),
    [
        ("ingress", "SIFT_API_KEYS", TEST_API_KEYS),
        ("deliver", "SIFT_WEBHOOK_SECRET", TEST_WEBHOOK_SECRET),
        ("postgres", "POSTGRES_PASSWORD", TEST_PG_PASSWORD),
        ("backfill", "PGPASSWORD", TEST_PG_PASSWORD),
        ("flower", "FLOWER_BASIC_AUTH", TEST_FLOWER_AUTH),
        ("redis", "REDIS_PASSWORD", TEST_PASSWORD),
    ],
)
def test_each_service_gets_its_secret(compose: dict[str, Any], service: str, key: str, value: str) -> None:
    assert environment_of(compose["services"][service]).get(key) == value


@pytest.mark.parametrize("service", ["worker-gpu0", "worker-cpu", "ingress", "flower", "prometheus", "redis"])
def test_secrets_go_only_where_they_are_used(compose: dict[str, Any], service: str) -> None:
    """The webhook key and the database password stay out of the containers that have no use for them."""
    env = environment_of(compose["services"][service])
    leaked = {key for key, value in env.items() if value in (TEST_WEBHOOK_SECRET, TEST_PG_PASSWORD)}
    assert leaked == set(), f"{service} gets {leaked}"


# --------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------


def test_vendored_schema_is_a_valid_draft7_schema() -> None:
    assert _validator().schema["title"] == "Compose Specification"


def test_compose_file_matches_compose_spec(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []


@pytest.mark.parametrize(
    "breakage",
    [
        "unknown_service_key",
        "bad_depends_condition",
        "device_without_capabilities",
        "ports_not_a_list",
        "healthcheck_typo",
        "expose_not_a_list",
    ],
)
def test_schema_check_catches_mistakes(compose: dict[str, Any], breakage: str) -> None:
    """The schema validation is not vacuous: typical mistakes are reported."""
    svc = compose["services"]["worker-gpu0"]
    if breakage == "unknown_service_key":
        svc["stop_grace"] = "60s"
    elif breakage == "bad_depends_condition":
        svc["depends_on"]["redis"]["condition"] = "service_ready"
    elif breakage == "device_without_capabilities":
        del svc["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"]
    elif breakage == "ports_not_a_list":
        compose["services"]["flower"]["ports"] = "5555:5555"
    elif breakage == "healthcheck_typo":
        compose["services"]["postgres"]["healthcheck"]["interval_s"] = 5
    else:
        svc["expose"] = {"metrics": 9400}
    assert schema_errors(compose) != []


# --------------------------------------------------------------------------------------------------
# The services of the stack, their healthchecks and dependencies
# --------------------------------------------------------------------------------------------------


def test_the_stack_has_its_services(compose: dict[str, Any]) -> None:
    svcs = services(compose)
    assert set(svcs) == DEFAULT_SERVICES | set(PROFILED_SERVICES)
    for name in DEFAULT_SERVICES:
        assert not svcs[name].get("profiles"), f"{name} should start with a plain `docker compose up`"
    for name, profile in PROFILED_SERVICES.items():
        assert svcs[name].get("profiles") == [profile], name


@pytest.mark.parametrize("name", sorted(HEALTH_CHECKED))
def test_servers_have_healthchecks(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert has_healthcheck(service), f"{name} has no healthcheck"
    check = service["healthcheck"]
    for key in ("interval", "timeout"):
        assert duration_s(check[key]) > 0, f"{name}: healthcheck {key}"
    assert duration_s(check["timeout"]) < duration_s(check["interval"]), f"{name}: timeout must be under interval"
    assert int(check["retries"]) >= 3, f"{name}: a single slow answer should not mark it unhealthy"


def test_every_healthy_dependency_has_a_healthcheck(compose: dict[str, Any]) -> None:
    """`condition: service_healthy` on a service without a healthcheck would make compose refuse to start."""
    svcs = services(compose)
    for name, service in svcs.items():
        for dep, spec in depends_on(service).items():
            assert dep in svcs, f"{name} depends on unknown service {dep}"
            if spec.get("condition") == "service_healthy":
                assert has_healthcheck(svcs[dep]), f"{name} waits for {dep} to be healthy, which has no healthcheck"


def test_no_dependency_hides_behind_a_profile_the_dependent_lacks(compose: dict[str, Any]) -> None:
    svcs = services(compose)
    for name, service in svcs.items():
        own = set(service.get("profiles") or [])
        for dep in depends_on(service):
            theirs = set(svcs[dep].get("profiles") or [])
            assert not theirs or (own and own <= theirs), f"{name} needs {dep}, which only starts under {theirs}"


@pytest.mark.parametrize(
    "name", ["worker-gpu0", "worker-gpu1", "worker-cpu", "ingress", "deliver", "backfill", "flower"]
)
def test_clients_wait_for_healthy_redis(compose: dict[str, Any], name: str) -> None:
    deps = compose["services"][name].get("depends_on")
    assert isinstance(deps, dict), f"{name}: depends_on must use the long form with a condition"
    assert deps.get("redis", {}).get("condition") == "service_healthy", name


def test_long_running_services_restart_and_one_offs_do_not(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        expected = "no" if name == "backfill" else "unless-stopped"
        assert service.get("restart") == expected, f"{name}: restart {service.get('restart')!r}"


# --------------------------------------------------------------------------------------------------
# Workers
# --------------------------------------------------------------------------------------------------


def test_gpu_workers_each_reserve_one_distinct_nvidia_gpu(compose: dict[str, Any]) -> None:
    names = gpu_worker_names(compose)
    assert len(names) >= 2, f"expected one worker service per GPU, got {names}"
    seen: dict[str, str] = {}
    for name in names:
        devices = device_reservations(compose["services"][name])
        assert len(devices) == 1, f"{name}: expected one device reservation, got {devices}"
        device = devices[0]
        assert device.get("driver") == "nvidia", name
        assert "gpu" in device.get("capabilities", []), name
        assert "count" not in device, f"{name}: pin a GPU with device_ids, not count"
        ids = device.get("device_ids") or []
        assert len(ids) == 1, f"{name}: must reserve exactly one GPU, got {ids}"
        assert ids[0] not in seen, f"{name} and {seen.get(ids[0])} both reserve GPU {ids[0]}"
        seen[ids[0]] = name
        assert name == f"worker-gpu{ids[0]}", f"{name} reserves GPU {ids[0]}: name and device disagree"


def test_every_worker_runs_sift_worker_with_a_device(compose: dict[str, Any]) -> None:
    names = worker_names(compose)
    assert {"worker-gpu0", "worker-gpu1", "worker-cpu"} <= set(names)
    hostnames: list[str | None] = []
    for name in names:
        command = command_of(compose["services"][name])
        device = option(command, "--device")
        assert device is not None, f"{name}: no --device in {command}"
        # Inside a container pinned to one GPU, that GPU is always cuda:0.
        expected = "cuda:0" if name in gpu_worker_names(compose) else "cpu"
        assert device == expected, f"{name}: --device {device}, expected {expected}"
        assert option(command, "--queues") == "realtime,bulk", name
        assert option(command, "--models") == "sentiment,zero_shot,nli,rerank", name
        hostnames.append(option(command, "--hostname"))
    assert None not in hostnames, f"a worker has no --hostname: {hostnames}"
    assert len(set(hostnames)) == len(hostnames), f"worker hostnames clash: {hostnames}"


def test_cpu_worker_is_behind_a_profile_and_reserves_no_gpu(compose: dict[str, Any]) -> None:
    cpu = compose["services"]["worker-cpu"]
    assert cpu.get("profiles") == ["cpu"]
    assert device_reservations(cpu) == []
    for name in gpu_worker_names(compose):
        assert not compose["services"][name].get("profiles"), f"{name} should start by default"


def test_workers_stop_gracefully(compose: dict[str, Any]) -> None:
    for name in worker_names(compose):
        svc = compose["services"][name]
        assert svc.get("stop_signal") == "SIGTERM", name
        assert duration_s(svc.get("stop_grace_period", "10s")) >= 30, f"{name}: grace period too short"


def test_workers_share_a_persistent_hf_cache(compose: dict[str, Any]) -> None:
    volume_names = set(compose.get("volumes") or {})
    for name in worker_names(compose):
        svc = compose["services"][name]
        mounts = [str(v) for v in svc.get("volumes", [])]
        cache = [m for m in mounts if m.split(":")[1:2] == [HF_CACHE]]
        assert cache, f"{name}: no volume at {HF_CACHE}"
        assert cache[0].split(":")[0] in volume_names, f"{name}: HF cache must be a named volume"
        assert environment_of(svc).get("HF_HOME") == HF_CACHE, name


def test_workers_use_the_shared_anchor() -> None:
    text = raw_text()
    assert re.search(r"^x-worker: &worker$", text, re.MULTILINE)
    for name in ("worker-gpu0", "worker-gpu1", "worker-cpu"):
        assert re.search(rf"^  {name}:\n    <<: \*worker$", text, re.MULTILINE), name


def test_sift_services_get_their_settings(compose: dict[str, Any]) -> None:
    for name in [*worker_names(compose), "ingress", "deliver", "backfill"]:
        env = environment_of(compose["services"][name])
        assert env.get("SIFT_REDIS_URL") == f"redis://:{TEST_PASSWORD}@redis:6379/0", name
        assert int(env.get("SIFT_RESULT_TTL_S") or 0) > 0, name
        assert "SIFT_REGISTRY" in env, name
        assert "SIFT_POLICY" in env, name


def test_workers_serve_metrics_on_one_port_inside_the_network_only(compose: dict[str, Any]) -> None:
    ports = {name: metrics_port_of(compose["services"][name]) for name in worker_names(compose)}
    assert len(set(ports.values())) == 1, f"workers differ in SIFT_METRICS_PORT: {ports}"
    port = next(iter(ports.values()))
    assert 1024 <= port <= 65535, port
    for name in worker_names(compose):
        svc = compose["services"][name]
        assert [str(p) for p in svc.get("expose", [])] == [str(port)], f"{name}: expose the metrics port"
        assert not svc.get("ports"), f"{name} publishes ports on the host"


def test_only_workers_are_told_to_serve_metrics(compose: dict[str, Any]) -> None:
    """Producers in the same image would otherwise try to bind the workers' metrics port for nothing."""
    for name, svc in services(compose).items():
        if name not in worker_names(compose):
            assert "SIFT_METRICS_PORT" not in environment_of(svc), name


# --------------------------------------------------------------------------------------------------
# Redis, network exposure
# --------------------------------------------------------------------------------------------------


def test_redis_is_pinned_password_protected_persistent_and_health_checked(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert re.fullmatch(r"redis:7\.\d+\.\d+", str(redis["image"])), f"pin a 7.x.y tag, got {redis['image']}"
    command = command_of(redis)
    assert command[0] == "redis-server"
    assert option(command, "--requirepass") == TEST_PASSWORD
    assert option(command, "--appendonly") == "yes"
    assert any(str(v).endswith(":/data") for v in redis.get("volumes", [])), "no volume for /data"
    joined = healthcheck_text(redis)
    # `$$` in the file reaches the container as `$REDIS_PASSWORD`, expanded by the container's shell.
    assert "redis-cli" in joined, joined
    assert "ping" in joined, joined
    assert '"$REDIS_PASSWORD"' in joined, joined
    assert TEST_PASSWORD not in joined
    assert environment_of(redis).get("REDIS_PASSWORD") == TEST_PASSWORD


def test_nothing_is_published_beyond_loopback_by_default(compose: dict[str, Any]) -> None:
    published = 0
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            published += 1
            assert published_host_ip(port) in LOOPBACK, f"{name} publishes {port!r} to every interface"
    assert published >= 5, "redis, postgres, ingress, prometheus and flower publish a loopback port"


@pytest.mark.parametrize(
    ("variable", "service"),
    [
        ("REDIS_HOST_IP", "redis"),
        ("INGRESS_HOST_IP", "ingress"),
        ("FLOWER_HOST_IP", "flower"),
        ("PROMETHEUS_HOST_IP", "prometheus"),
    ],
)
def test_a_documented_variable_opens_one_service_to_the_network(variable: str, service: str) -> None:
    assert variable in header_comment(), f"{variable} is not documented"
    opened = load_compose({**TEST_ENV, variable: "0.0.0.0"})
    for name, svc in opened["services"].items():
        ips = {published_host_ip(port) for port in svc.get("ports", [])}
        if name == service:
            assert ips == {"0.0.0.0"}, name
        else:
            assert ips <= LOOPBACK, f"{variable} also opened {name}"


def test_services_without_a_user_facing_port_publish_nothing(compose: dict[str, Any]) -> None:
    for name in [*worker_names(compose), "deliver", "backfill"]:
        assert not compose["services"][name].get("ports"), f"{name} publishes {compose['services'][name]['ports']}"


def test_port_parsing() -> None:
    assert published_host_ip("5555:5555") == "0.0.0.0"
    assert published_host_ip(5555) == "0.0.0.0"
    assert published_host_ip("6379") == "0.0.0.0"
    assert published_host_ip("127.0.0.1:6379:6379/tcp") == "127.0.0.1"
    assert published_host_ip("[::1]:6379:6379") == "::1"
    assert published_host_ip({"target": 6379, "published": 6379}) == "0.0.0.0"
    assert published_ports("127.0.0.1:16379:6379") == "16379"
    assert published_ports("[::1]:5555:5555") == "5555"
    assert container_port("127.0.0.1:18000:8000/tcp") == "8000"
    assert container_port({"target": 8000}) == "8000"


def test_flower_connects_with_the_password_and_auth(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    image, _, tag = str(flower["image"]).partition(":")
    assert image == "mher/flower", flower["image"]
    assert re.fullmatch(r"2\.\d+(\.\d+)?", tag), f"pin a Flower 2.x tag, got {flower['image']}"
    env = environment_of(flower)
    broker = env.get("CELERY_BROKER_URL") or option(command_of(flower), "--broker")
    assert broker == f"redis://:{TEST_PASSWORD}@redis:6379/0"
    assert env.get("FLOWER_BASIC_AUTH") == TEST_FLOWER_AUTH
    assert [published_ports(p) for p in flower.get("ports", [])] == ["5555"]


# --------------------------------------------------------------------------------------------------
# Ingress and webhook delivery
# --------------------------------------------------------------------------------------------------


def test_ingress_serves_on_the_port_it_publishes_and_checks(compose: dict[str, Any]) -> None:
    ingress = compose["services"]["ingress"]
    command = command_of(ingress)
    assert command[:2] == ["sift", "ingress"], command
    # Inside a container, 127.0.0.1 would be unreachable from the published port and from Prometheus.
    assert option(command, "--host") == "0.0.0.0", command
    port = option(command, "--port")
    assert port is not None, command
    assert [container_port(p) for p in ingress.get("ports", [])] == [port]
    assert [published_ports(p) for p in ingress["ports"]] == ["8000"]
    check = healthcheck_text(ingress)
    assert f"http://127.0.0.1:{port}/readyz" in check, check
    assert environment_of(ingress).get("SIFT_API_KEYS") == TEST_API_KEYS
    assert duration_s(ingress["stop_grace_period"]) > 30, "uvicorn drains requests for up to 30 s"


def test_ingress_port_can_move_on_the_host(compose: dict[str, Any]) -> None:
    moved = load_compose({**TEST_ENV, "INGRESS_HOST_PORT": "18000"})["services"]["ingress"]
    assert [(published_ports(p), container_port(p)) for p in moved["ports"]] == [("18000", "8000")]


def test_ingress_limits_have_defaults_within_the_ingress_bounds(compose: dict[str, Any]) -> None:
    env = environment_of(compose["services"]["ingress"])
    assert int(env["SIFT_MAX_REQUEST_BYTES"] or 0) >= 1024  # IngressSettings' lower bound
    assert int(env["SIFT_MAX_ITEMS_PER_REQUEST"] or 0) >= 1


def test_deliver_runs_the_dispatcher_with_the_secret(compose: dict[str, Any]) -> None:
    deliver = compose["services"]["deliver"]
    assert command_of(deliver) == ["sift", "deliver"]
    assert environment_of(deliver).get("SIFT_WEBHOOK_SECRET") == TEST_WEBHOOK_SECRET
    assert deliver.get("stop_signal") == "SIGTERM"
    assert duration_s(deliver.get("stop_grace_period", "10s")) >= 10
    # Several dispatchers share one consumer group, so the service must be scalable: no fixed name, no port.
    assert "container_name" not in deliver
    assert not deliver.get("ports")


# --------------------------------------------------------------------------------------------------
# PostgreSQL and the backfill
# --------------------------------------------------------------------------------------------------


def test_postgres_is_pinned_protected_persistent_and_health_checked(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert re.fullmatch(r"postgres:\d{2,}\.\d+", str(postgres["image"])), f"pin major.minor, got {postgres['image']}"
    env = environment_of(postgres)
    assert env.get("POSTGRES_PASSWORD") == TEST_PG_PASSWORD
    assert env.get("POSTGRES_USER") and env.get("POSTGRES_DB")
    check = healthcheck_text(postgres)
    assert "pg_isready" in check, check
    # Over TCP: during initdb the image's temporary server listens on the socket only.
    assert "-h 127.0.0.1" in check, check
    assert TEST_PG_PASSWORD not in check
    mounts = [str(v).split(":") for v in postgres.get("volumes", [])]
    data = [m[0] for m in mounts if m[1:2] == ["/var/lib/postgresql/data"]]
    assert data and data[0] in (compose.get("volumes") or {}), "PostgreSQL data must be on a named volume"
    assert [container_port(p) for p in postgres.get("ports", [])] == ["5432"]


def test_backfill_is_a_profiled_one_off_with_data_mounts(compose: dict[str, Any]) -> None:
    backfill = compose["services"]["backfill"]
    assert backfill.get("profiles") == ["backfill"]
    assert command_of(backfill) == [
        "sift",
        "backfill",
        "/data/in/input.jsonl",
        "--task",
        "classify",
        "--out",
        "/data/out/results.jsonl",
    ]
    volumes = [str(v) for v in backfill.get("volumes", [])]
    assert "./data/in:/data/in:ro" in volumes
    assert "./data/out:/data/out" in volumes
    assert not backfill.get("ports")
    assert depends_on(backfill)["postgres"]["condition"] == "service_healthy"


def documented_postgres_urls() -> list[str]:
    return re.findall(r"BACKFILL_OUT=(postgres(?:ql)?://\S+)", raw_text())


def test_the_documented_postgres_output_reaches_the_postgres_service(compose: dict[str, Any]) -> None:
    """The comment's BACKFILL_OUT is a target sift's sink accepts, naming the service's host, port, role and db."""
    urls = documented_postgres_urls()
    assert urls, "document the postgresql:// alternative for BACKFILL_OUT"
    postgres = compose["services"]["postgres"]
    env = environment_of(postgres)
    for url in urls:
        assert parse_target(url).kind is SinkKind.POSTGRES, url
        target = parse_postgres_url(url)
        assert target.secrets == (), f"{url} carries a password; the backfill has PGPASSWORD"
        parts = urlsplit(target.conninfo)
        assert (parts.hostname, parts.port) == ("postgres", int(container_port(postgres["ports"][0]))), url
        assert parts.username == env["POSTGRES_USER"], url
        assert parts.path.lstrip("/") == env["POSTGRES_DB"], url
        # And BACKFILL_OUT really reaches the command.
        backfill = load_compose({**TEST_ENV, "BACKFILL_OUT": url})["services"]["backfill"]
        assert option(command_of(backfill), "--out") == url


# --------------------------------------------------------------------------------------------------
# Prometheus
# --------------------------------------------------------------------------------------------------


def test_prometheus_is_pinned_with_a_persistent_tsdb(compose: dict[str, Any]) -> None:
    prometheus = compose["services"]["prometheus"]
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", str(prometheus["image"])), prometheus["image"]
    command = command_of(prometheus)
    tsdb = option(command, "--storage.tsdb.path")
    mounts = [str(v).split(":") for v in prometheus.get("volumes", [])]
    assert any(m[0] in (compose.get("volumes") or {}) and m[1] == tsdb for m in mounts), "TSDB on a named volume"
    assert option(command, "--storage.tsdb.retention.time"), "set a retention"
    assert "/-/ready" in healthcheck_text(prometheus)
    config = [m for m in mounts if m[1] == option(command, "--config.file")]
    assert config and config[0][-1] == "ro", "mount the scrape config read-only"


def test_prometheus_config_exists_and_parses(compose: dict[str, Any]) -> None:
    path = prometheus_config_path(compose)
    assert path.is_file(), f"{path} is missing"
    prom = load_prometheus_config(compose)
    jobs = [job["job_name"] for job in prom["scrape_configs"]]
    assert len(set(jobs)) == len(jobs), f"job names must be unique: {jobs}"
    duration_s(prom["global"]["scrape_interval"])


def test_prometheus_scrapes_every_worker_and_the_ingress_where_they_serve(compose: dict[str, Any]) -> None:
    assert scrape_problems(compose, load_prometheus_config(compose)) == []


def test_scaled_workers_are_discovered_through_dns(compose: dict[str, Any]) -> None:
    """worker-cpu can run as N replicas: a static target would hit one replica at random per scrape."""
    prom = load_prometheus_config(compose)
    dns_names = {
        name for job in prom["scrape_configs"] for dns in job.get("dns_sd_configs") or [] for name in dns["names"]
    }
    assert "worker-cpu" in dns_names


def test_remote_workers_may_be_scraped_by_address(compose: dict[str, Any]) -> None:
    """Workers on other machines are listed by IP or domain name, which no compose service has."""
    prom = copy.deepcopy(load_prometheus_config(compose))
    prom["scrape_configs"].append(
        {"job_name": "remote", "static_configs": [{"targets": ["10.0.0.12:9400", "gpu-7.example.internal:9401"]}]}
    )
    assert scrape_problems(compose, prom) == []


@pytest.mark.parametrize("breakage", ["wrong_port", "unknown_service", "worker_missing", "ingress_port"])
def test_scrape_check_catches_mistakes(compose: dict[str, Any], breakage: str) -> None:
    prom = copy.deepcopy(load_prometheus_config(compose))
    static = prom["scrape_configs"][0]["static_configs"][0]
    if breakage == "wrong_port":
        compose["services"]["worker-gpu1"]["environment"]["SIFT_METRICS_PORT"] = "9500"
    elif breakage == "unknown_service":
        static["targets"].append("worker-gpu7:9400")
    elif breakage == "worker_missing":
        compose["services"]["worker-gpu2"] = copy.deepcopy(compose["services"]["worker-gpu1"])
    else:
        compose["services"]["ingress"]["command"] = ["sift", "ingress", "--host", "0.0.0.0", "--port", "8080"]
    assert scrape_problems(compose, prom) != []


# --------------------------------------------------------------------------------------------------
# Dockerfile and images
# --------------------------------------------------------------------------------------------------


def test_dockerfile_stages_start_from_slim_python() -> None:
    stages = dockerfile_stages()
    assert dockerfile_instructions()[0] == "FROM python:3.11-slim AS base"
    assert {"app", "worker"} <= set(stages)
    for target in ("app", "worker"):
        assert stage_chain(target)[0] == "base", target


@pytest.mark.parametrize("target", ["app", "worker"])
def test_each_target_runs_unprivileged_with_the_hf_cache(target: str) -> None:
    instructions = stage_instructions(target)
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users, f"{target} must switch to a non-root USER"
    assert users[-1] not in {"root", "0"}, f"{target} must not run as root"
    assert any(HF_CACHE in line or "HF_HOME" in line for line in instructions)


def test_worker_target_pins_torch_first() -> None:
    instructions = stage_instructions("worker")
    torch_at = next(i for i, line in enumerate(instructions) if re.search(r"pip install \"?torch==", line))
    args = [line for line in instructions[:torch_at] if line.startswith("ARG TORCH_VERSION=")]
    assert args, "the torch version must be an ARG set before it is installed"
    version = args[-1].split("=", 1)[1]
    extras_at = next(i for i, line in enumerate(instructions) if 'pip install ".[worker' in line)
    copy_at = next(i for i, line in enumerate(instructions) if line.startswith("COPY "))
    assert torch_at < copy_at < extras_at, "install the pinned torch before the sources and the package"
    # The image's pin and the package's agree, or pip replaces the torch just installed.
    assert f"torch=={version}" in pyproject()["project"]["optional-dependencies"]["worker"]


def test_app_target_has_no_torch() -> None:
    instructions = stage_instructions("app")
    assert not any("torch" in line for line in instructions), "the producer image must stay free of torch"
    assert "worker" not in installed_extras("app")


def test_extras_installed_exist_in_pyproject() -> None:
    known = set(pyproject()["project"]["optional-dependencies"])
    for target in ("app", "worker"):
        extras = installed_extras(target)
        assert extras, f"{target} installs no extra"
        assert extras <= known, f"{target} installs unknown extras {extras - known}"


def test_each_service_image_holds_the_extras_its_command_needs(compose: dict[str, Any]) -> None:
    for name, service in services(compose).items():
        command = command_of(service)
        if command[:1] != ["sift"]:
            continue
        target = build_target(service)
        assert target in dockerfile_stages(), f"{name}: build target {target!r} is not a Dockerfile stage"
        needed = EXTRAS_BY_SUBCOMMAND.get(command[1], set())
        assert needed <= installed_extras(target), f"{name} runs `sift {command[1]}` without {needed}"


def test_one_image_name_per_build_target(compose: dict[str, Any]) -> None:
    """Two targets under one tag would overwrite each other at build time."""
    targets_by_image: dict[str, set[str | None]] = {}
    for service in services(compose).values():
        if "build" in service:
            targets_by_image.setdefault(str(service["image"]), set()).add(build_target(service))
    assert all(len(targets) == 1 for targets in targets_by_image.values()), targets_by_image
    assert len(targets_by_image) == 2, targets_by_image


def test_dockerignore_keeps_secrets_and_deploy_config_out_of_the_image() -> None:
    ignored = set((REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").split())
    assert {".env", ".git", "deploy"} <= ignored


# --------------------------------------------------------------------------------------------------
# The real parser, when it is installed
# --------------------------------------------------------------------------------------------------


@functools.cache
def _docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def test_docker_compose_config_accepts_the_file() -> None:
    if not _docker_compose_available():
        pytest.skip("`docker compose` (the CLI compose plugin) is not installed; schema checks above still ran")
    env = {**os.environ, **TEST_ENV}
    profiles = [arg for profile in sorted(set(PROFILED_SERVICES.values())) for arg in ("--profile", profile)]
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), *profiles, "config", "-q"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
