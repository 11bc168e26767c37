"""Static checks of docker-compose.yml (and the Dockerfile it builds), without a Docker engine.

The file is parsed with PyYAML, its ``${...}`` references are substituted the way compose does it (after
parsing, in values only), and the result is validated against the official compose-spec JSON schema and
against the deployment rules sift relies on (one GPU per worker, healthy Redis first, no leaked password...).

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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
SCHEMA_FILE = Path(__file__).resolve().parent / "data" / "compose-spec.json"

# Values no real deployment would use, so finding them in the file would mean a hard-coded secret.
TEST_PASSWORD = "t3st-Redis-pw-9f2c"
TEST_FLOWER_AUTH = "admin:t3st-flower-pw-41aa"
TEST_ENV: dict[str, str] = {"REDIS_PASSWORD": TEST_PASSWORD, "FLOWER_BASIC_AUTH": TEST_FLOWER_AUTH}

HF_CACHE = "/home/sift/.cache/huggingface"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


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
# Required variables
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("env", [{}, {"REDIS_PASSWORD": ""}], ids=["unset", "empty"])
def test_missing_redis_password_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(InterpolationError, match=r"REDIS_PASSWORD is missing a value: set REDIS_PASSWORD in \.env"):
        load_compose({"FLOWER_BASIC_AUTH": TEST_FLOWER_AUTH, **env})


def test_every_redis_password_reference_is_required() -> None:
    """Each ``${REDIS_PASSWORD...}`` uses ``:?``, so no code path silently runs Redis without a password."""
    references = re.findall(r"\$\{REDIS_PASSWORD([^}]*)\}", raw_text())
    assert references, "REDIS_PASSWORD is never referenced"
    assert all(ref.startswith(":?") for ref in references), references


def test_password_is_never_a_literal() -> None:
    text = raw_text()
    assert TEST_PASSWORD not in text
    # Every redis:// URL in a value (comments aside) takes its password from the variable.
    urls = [url for value in iter_strings(raw_compose()) for url in re.findall(r"redis://\S*", value)]
    assert urls, "no redis:// URL found"
    for url in urls:
        assert url.startswith("redis://:${REDIS_PASSWORD"), url
    # So does --requirepass, and the container-side variable used by the healthcheck.
    redis = raw_compose()["services"]["redis"]
    command = command_of(redis)
    requirepass = option(command, "--requirepass")
    assert requirepass is not None, command
    assert requirepass.startswith("${REDIS_PASSWORD:?"), command
    for name, service in raw_compose()["services"].items():
        for key, value in environment_of(service).items():
            if "PASSWORD" in key or "AUTH" in key:
                assert value is None or value.startswith("${"), f"{name}: {key} is a literal"


# --------------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------------


def test_vendored_schema_is_a_valid_draft7_schema() -> None:
    assert _validator().schema["title"] == "Compose Specification"


def test_compose_file_matches_compose_spec(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []


@pytest.mark.parametrize(
    "breakage",
    ["unknown_service_key", "bad_depends_condition", "device_without_capabilities", "ports_not_a_list"],
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
    else:
        compose["services"]["flower"]["ports"] = "5555:5555"
    assert schema_errors(compose) != []


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
    for name in [*worker_names(compose), "backfill"]:
        env = environment_of(compose["services"][name])
        assert env.get("SIFT_REDIS_URL") == f"redis://:{TEST_PASSWORD}@redis:6379/0", name
        assert int(env.get("SIFT_RESULT_TTL_S") or 0) > 0, name
        assert "SIFT_REGISTRY" in env, name
        assert "SIFT_POLICY" in env, name


# --------------------------------------------------------------------------------------------------
# Redis, dependencies, network exposure
# --------------------------------------------------------------------------------------------------


def test_redis_is_password_protected_persistent_and_health_checked(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert re.fullmatch(r"redis:7(\.\d+)*(-\w+)?", str(redis["image"])), redis["image"]
    command = command_of(redis)
    assert command[0] == "redis-server"
    assert option(command, "--requirepass") == TEST_PASSWORD
    assert option(command, "--appendonly") == "yes"
    assert any(str(v).endswith(":/data") for v in redis.get("volumes", [])), "no volume for /data"
    test = redis["healthcheck"]["test"]
    joined = " ".join(test) if isinstance(test, list) else test
    # `$$` in the file reaches the container as `$REDIS_PASSWORD`, expanded by the container's shell.
    assert "redis-cli" in joined, joined
    assert "ping" in joined, joined
    assert '"$REDIS_PASSWORD"' in joined, joined
    assert TEST_PASSWORD not in joined
    assert environment_of(redis).get("REDIS_PASSWORD") == TEST_PASSWORD


@pytest.mark.parametrize("name", ["worker-gpu0", "worker-gpu1", "worker-cpu", "backfill", "flower"])
def test_clients_wait_for_healthy_redis(compose: dict[str, Any], name: str) -> None:
    depends_on = compose["services"][name].get("depends_on")
    assert isinstance(depends_on, dict), f"{name}: depends_on must use the long form with a condition"
    assert depends_on.get("redis", {}).get("condition") == "service_healthy", name


def test_only_flower_publishes_beyond_loopback(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if name == "flower":
            continue
        for port in svc.get("ports", []):
            assert published_host_ip(port) in LOOPBACK, f"{name} publishes {port!r} to every interface"


def test_port_parsing() -> None:
    assert published_host_ip("5555:5555") == "0.0.0.0"
    assert published_host_ip(5555) == "0.0.0.0"
    assert published_host_ip("6379") == "0.0.0.0"
    assert published_host_ip("127.0.0.1:6379:6379/tcp") == "127.0.0.1"
    assert published_host_ip("[::1]:6379:6379") == "::1"
    assert published_host_ip({"target": 6379, "published": 6379}) == "0.0.0.0"
    assert published_ports("127.0.0.1:16379:6379") == "16379"
    assert published_ports("[::1]:5555:5555") == "5555"


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


# --------------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------------


def test_dockerfile_pins_torch_first_and_runs_unprivileged() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    torch_at = next(i for i, line in enumerate(instructions) if re.search(r"pip install \"?torch==", line))
    assert any(line == "ARG TORCH_VERSION=2.13.0" for line in instructions[:torch_at])
    extras_at = next(i for i, line in enumerate(instructions) if 'pip install ".[worker]"' in line)
    assert torch_at < extras_at, "install the pinned torch before the package, or pip picks another build"
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users, "the image must switch to a non-root USER"
    assert users[-1] not in {"root", "0"}, "the image must not run as root"
    assert any(HF_CACHE in line or "HF_HOME" in line for line in instructions)


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
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "--profile", "cpu", "--profile", "backfill", "config", "-q"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
