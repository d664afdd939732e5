"""deploy/: the compose file, its .env.example, the Dockerfile and the nginx templates agree.

No Docker engine is needed: the files are read with PyYAML and regular expressions (and
`docker compose config` checks the file as well where the compose plugin is installed).
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, NGINX_SITES, PROJECT_ROOT, TEMPLATE_VARIABLE_RE

COMPOSE_FILE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = DEPLOY / "Dockerfile"
PORTAL_SERVICES = {"web", "worker", "singleton", "dicom"}
ALL_SERVICES = {"postgres", "redis", "migrate", *PORTAL_SERVICES, "nginx"}
SECRETS = {
    "SECRET_KEY",
    "POSTGRES_PASSWORD",
    "PORTAL_METRICS_TOKEN",
    "DATABASE_URL",
    "DATABASE_OWNER_URL",
    "PORTAL_DB_PASSWORD",
    "EMAIL_HOST_PASSWORD",
    "PORTAL_SEALING_KEY",
}

# ${NAME}, ${NAME:-default}, ${NAME:?error}, nested too; `$${...}` is an escaped dollar.
COMPOSE_VARIABLE_RE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
# env("NAME", ...), env.int("NAME", ...), env.list(...), env.db("NAME") in settings.py.
SETTINGS_READ_RE = re.compile(r"\benv(?:\.(\w+))?\(\s*\"([A-Z][A-Z0-9_]*)\"")
GUNICORN_READ_RE = re.compile(r"os\.environ\.get\(\s*\"([A-Z][A-Z0-9_]*)\"")
# `NAME=value` (active) or `# NAME=value` (a default the portal applies, value without spaces).
ENV_LINE_RE = re.compile(r"^(?:([A-Z][A-Z0-9_]*)=(.*)|# ([A-Z][A-Z0-9_]*)=(\S*))$")


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict]:
    return compose()["services"]


def compose_variables() -> set[str]:
    lines = COMPOSE_FILE.read_text().splitlines()
    code = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    return set(COMPOSE_VARIABLE_RE.findall(code))


def settings_reads() -> dict[str, str]:
    """Every variable portal/settings.py reads, with the parser it uses ("" for a string)."""
    text = (PROJECT_ROOT / "portal" / "settings.py").read_text()
    return {name: cast or "" for cast, name in SETTINGS_READ_RE.findall(text)}


def gunicorn_reads() -> set[str]:
    return set(GUNICORN_READ_RE.findall((DEPLOY / "gunicorn.conf.py").read_text()))


def env_example() -> dict[str, tuple[bool, str, str]]:
    """NAME -> (active, value, its comment): the comment lines right above it, or those of
    the variable above it when several share one (no blank line between them)."""
    entries: dict[str, tuple[bool, str, str]] = {}
    pending: list[str] = []
    block = ""
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = ENV_LINE_RE.match(line)
        if match:
            active = match[1] is not None
            name, value = (match[1], match[2]) if active else (match[3], match[4])
            assert name not in entries, f"{name} is listed twice in .env.example"
            block = "\n".join(pending) if pending else block
            pending = []
            entries[name] = (active, value, block)
        elif line.startswith("#"):
            pending.append(line)
        else:
            pending, block = [], ""
    return entries


def command_text(service: dict) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


# -- the compose file ---------------------------------------------------------------------------


def test_compose_file_has_the_services() -> None:
    assert set(services()) == ALL_SERVICES


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    """Where the compose plugin exists, `docker compose config` must accept the file with
    .env.example's values (secrets filled in). It needs no engine."""
    docker = shutil.which("docker")
    if (
        docker is None
        or subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
    ):
        pytest.skip("the docker compose plugin is not installed; the YAML tests stand in")
    env = ENV_EXAMPLE.read_text()
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "PORTAL_DB_PASSWORD"):
        env = env.replace(f"\n{name}=\n", f"\n{name}={'0' * 40}\n")
    (tmp_path / ".env").write_text(env)
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "--env-file", str(tmp_path / ".env"),
         "config", "--quiet"],
        capture_output=True, text=True, check=False, cwd=DEPLOY,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr


def test_every_long_running_service_has_a_health_check() -> None:
    for name, service in services().items():
        if name == "migrate":
            assert service["restart"] == "no", "migrate runs once per deploy"
            continue
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), name
        assert service.get("restart") == "unless-stopped", name


def test_start_order_waits_for_health_and_the_migration() -> None:
    all_ = services()
    for name in PORTAL_SERVICES:
        depends = all_[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
    migrate = all_["migrate"]["depends_on"]
    assert {k: v["condition"] for k, v in migrate.items()} == {
        "postgres": "service_healthy",
        "redis": "service_healthy",
    }
    assert all_["nginx"]["depends_on"]["web"]["condition"] == "service_healthy"


def test_processes_run_the_right_commands() -> None:
    all_ = services()
    assert "manage.py migrate_portal" in command_text(all_["migrate"])
    assert command_text(all_["web"]).startswith("gunicorn ")
    assert "portal.wsgi" in command_text(all_["web"])
    worker = command_text(all_["worker"])
    assert "celery" in worker and " worker" in worker
    assert "--queues=default,periodic" in worker
    assert "manage.py dicom_gateway" in command_text(all_["dicom"])


def test_only_the_migration_logs_in_as_the_owner_of_the_tables() -> None:
    """The processes get the role that owns nothing; env_file's owner password is blanked."""
    all_ = services()
    for name in PORTAL_SERVICES:
        environment = all_[name]["environment"]
        assert environment["DATABASE_URL"].startswith("${DATABASE_URL:-postgres://portal_app:")
        assert environment["DATABASE_OWNER_URL"] == "", name
        assert environment["POSTGRES_PASSWORD"] == "", name
    owner = all_["migrate"]["environment"]["DATABASE_OWNER_URL"]
    assert owner.startswith("${DATABASE_OWNER_URL:-postgres://${POSTGRES_USER:-portal}:")


def test_exactly_one_singleton_runs_beat() -> None:
    beats = [name for name, s in services().items() if " beat" in command_text(s)]
    assert beats == ["singleton"]
    assert services()["singleton"]["deploy"]["replicas"] == 1


def test_redis_persists_the_broker_append_only() -> None:
    redis = services()["redis"]
    command = command_text(redis)
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_volumes_for_the_database_and_the_storage_root() -> None:
    all_ = services()
    assert "pgdata:/var/lib/postgresql/data" in all_["postgres"]["volumes"]
    for name in PORTAL_SERVICES:
        assert "storage:/data/storage" in all_[name]["volumes"], name
        assert all_[name]["environment"]["PORTAL_STORAGE_ROOT"] == "/data/storage", name
    # nginx serves the static volume the migration fills, never the storage root.
    assert "static:/srv/static" in all_["migrate"]["volumes"]
    assert "static:/srv/static:ro" in all_["nginx"]["volumes"]
    assert not any(v.startswith("storage:") for v in all_["nginx"]["volumes"])
    assert {"pgdata", "redisdata", "storage", "static"} <= set(compose()["volumes"])


def test_only_nginx_and_the_dicom_gateway_are_published() -> None:
    published = {name for name, s in services().items() if s.get("ports")}
    assert published == {"nginx", "dicom"}
    assert services()["dicom"]["ports"] == [
        "${PORTAL_DICOM_PORT:-11112}:${PORTAL_DICOM_PORT:-11112}"
    ]


def test_images_are_parameterised() -> None:
    all_ = services()
    portal_image = "${PORTAL_IMAGE:-pacs-portal}:${PORTAL_VERSION:?set PORTAL_VERSION in .env}"
    for name in {*PORTAL_SERVICES, "migrate"}:
        assert all_[name]["image"] == portal_image, name
        assert all_[name]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    for name, variable in (
        ("postgres", "POSTGRES_IMAGE"),
        ("redis", "REDIS_IMAGE"),
        ("nginx", "NGINX_IMAGE"),
    ):
        assert all_[name]["image"].startswith("${" + variable + ":-"), name


def test_the_portal_trusts_nginx_address() -> None:
    all_ = services()
    address = all_["nginx"]["networks"]["backend"]["ipv4_address"]
    assert address == "${NGINX_IPV4_ADDRESS:-172.30.60.10}"
    for name in PORTAL_SERVICES:
        trusted = all_[name]["environment"]["PORTAL_TRUSTED_PROXIES"]
        assert trusted == "${PORTAL_TRUSTED_PROXIES:-${NGINX_IPV4_ADDRESS:-172.30.60.10}/32}"
    assert all_["web"]["environment"]["FORWARDED_ALLOW_IPS"] == address
    assert env_example()["PORTAL_TRUSTED_PROXIES"][1] == "172.30.60.10/32"


# -- .env.example --------------------------------------------------------------------------------


def test_every_compose_variable_is_documented() -> None:
    missing = compose_variables() - set(env_example())
    assert not missing, f"used in docker-compose.yml, not in .env.example: {sorted(missing)}"


def test_every_setting_the_portal_reads_is_documented() -> None:
    missing = set(settings_reads()) - set(env_example())
    assert not missing, f"read by portal/settings.py, not in .env.example: {sorted(missing)}"


def test_every_documented_variable_is_used() -> None:
    used = compose_variables() | set(settings_reads()) | gunicorn_reads()
    unused = set(env_example()) - used
    assert not unused, f"in .env.example, used by nothing: {sorted(unused)}"


def test_every_variable_is_explained_and_secrets_say_so() -> None:
    for name, (_, _, comment) in env_example().items():
        assert comment.strip(), f"{name} has no comment in .env.example"
        assert ("SECRET" in comment) == (name in SECRETS), (name, comment)


def test_active_values_parse() -> None:
    """What env_file passes must load: no empty numbers or flags, production settings."""
    reads = settings_reads()
    for name, (active, value, _) in env_example().items():
        if active and reads.get(name) in {"int", "float", "bool"}:
            assert value.strip(), f"{name}= is empty: the portal could not parse it"
        if active:
            assert not value.startswith(("'", '"')), f"{name}: quotes would be kept literally"
    entries = env_example()
    assert entries["DEBUG"][:2] == (True, "false")
    # The secrets ship empty, so compose refuses to start until they are filled in.
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD"):
        assert entries[name][:2] == (True, ""), name
        assert f"${{{name}:?" in COMPOSE_FILE.read_text(), name


# -- nginx templates ------------------------------------------------------------------------------


@pytest.mark.parametrize("site", NGINX_SITES)
def test_nginx_template_variables_come_from_compose(site: str) -> None:
    text = (DEPLOY / "nginx" / f"{site}.conf.template").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    needed = set(TEMPLATE_VARIABLE_RE.findall(code))
    given = set(services()["nginx"]["environment"])
    assert needed and needed <= given, sorted(needed - given)
    # envsubst would also replace `$NAME` without braces: nginx's own variables are lower case.
    assert not re.findall(r"\$[A-Z]", code.replace("${", "")), site
    assert "X-Tenant" in code and "X-Forwarded-Prefix" in code


def test_compose_mounts_a_shipped_site() -> None:
    volumes = services()["nginx"]["volumes"]
    template = "./nginx/${NGINX_SITE:-subdomain}.conf.template"
    assert f"{template}:/etc/nginx/templates/default.conf.template:ro" in volumes
    assert env_example()["NGINX_SITE"][1] in NGINX_SITES


# -- Dockerfile ------------------------------------------------------------------------------------


def final_stage() -> list[str]:
    lines = DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
    instructions = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    last_from = max(i for i, line in enumerate(instructions) if line.startswith("FROM "))
    return instructions[last_from:]


def test_dockerfile_builds_a_slim_non_root_image() -> None:
    text = DOCKERFILE.read_text()
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert re.search(r"pip install \.(\s|$)", text), "pip install . (no dev extras)"
    assert "[dev]" not in text
    stage = final_stage()
    users = [line.split()[1] for line in stage if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    collect = next(i for i, line in enumerate(stage) if "collectstatic --noinput" in line)
    assert collect < next(i for i, line in enumerate(stage) if line.startswith("USER "))
    assert "EXPOSE 8000 11112" in stage
    cmd = next(line for line in stage if line.startswith("CMD "))
    assert "gunicorn" in cmd and "portal.wsgi" in cmd and "deploy/gunicorn.conf.py" in cmd


def test_build_context_keeps_what_the_image_needs() -> None:
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ".env" in ignored and ".git" in ignored and ".venv" in ignored and ".var" in ignored
    assert "!deploy/gunicorn.conf.py" in ignored
    for source in re.findall(r"^COPY (\S+)/ ", DOCKERFILE.read_text(), re.MULTILINE):
        assert (PROJECT_ROOT / source).is_dir(), source
        assert source not in ignored, source


def test_the_dicom_tls_override_publishes_the_tls_port_and_mounts_its_certificates() -> None:
    override = yaml.safe_load((DEPLOY / "docker-compose.dicom-tls.yml").read_text())
    [(name, service)] = override["services"].items()
    assert name == "dicom" and name in services()
    [port] = service["ports"]
    assert port.startswith("${PORTAL_DICOM_TLS_PORT:?") and port.endswith(
        ":${PORTAL_DICOM_TLS_PORT}"
    )
    [volume] = service["volumes"]
    assert volume.endswith(":/run/dicom-tls:ro")
    # The paths .env.example suggests are inside that mount.
    suggested = [
        line.split("=", 1)[1]
        for line in ENV_EXAMPLE.read_text().splitlines()
        if re.match(r"# PORTAL_DICOM_TLS_(CERTIFICATE|KEY|CLIENT_CA)=", line)
    ]
    assert len(suggested) == 3 and all(p.startswith("/run/dicom-tls/") for p in suggested)
