"""The checks `llmdeploy validate` runs on rendered output, each with the real tool where one exists.

Every check returns a CheckResult (llmdeploy/result.py) instead of raising, so all of them run and
the report shows each one. Tools: Debian's cloud-init (schema), shellcheck, nginx (nginx -t) and
systemd-analyze verify.
"""
from __future__ import annotations

import atexit
import gzip
import hashlib
import json
import shutil
import subprocess
import tempfile
import time
from base64 import b64decode
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import yaml

from .config import StackConfig
from .bundle import OCI_METADATA_LIMIT
from .render import FILES_DIR, HostLayout, Rendered, encode_user_data, machine_name, render, render_nodes
from .result import FAIL, PASS, CheckResult

# Debian's cloud-init lives in the system Python, whatever Python runs llmdeploy.
SYSTEM_PYTHON = "/usr/bin/python3"


# The width of a check's name in `llmdeploy validate`'s report.
NAME_WIDTH = 34


def _result(name: str, ok: bool, detail: str, seconds: float = 0.0) -> CheckResult:
    """A validator's verdict: its first line is the summary, and the whole text (a tool's output) the evidence."""
    lines = detail.strip().splitlines()
    return CheckResult(name, PASS if ok else FAIL, lines[0] if lines else "", seconds, {"output": detail})


def _timed(name: str, fn: Callable[[], tuple[bool, str]]) -> CheckResult:
    start = time.monotonic()
    try:
        ok, detail = fn()
    except FileNotFoundError as exc:
        ok, detail = False, f"{exc.filename} is not installed (apt-get install cloud-init nginx shellcheck)"
    return _result(name, ok, detail, time.monotonic() - start)


def _missing_tool(tool: str, package: str) -> tuple[bool, str] | None:
    if shutil.which(tool) is None:
        return False, f"{tool} not found: install it (apt-get install {package})"
    return None


# ---- cloud-init -------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def cloud_init_top_level_keys() -> frozenset[str]:
    """Every top-level key cloud-init's schema knows (the schema itself lets unknown keys through)."""
    code = ("import json\nfrom cloudinit.config.schema import get_schema\ns = get_schema()\nkeys = set()\n"
            "for part in s.get('allOf', []):\n"
            "    ref = part.get('$ref', '')\n"
            "    keys |= set(s['$defs'].get(ref.rsplit('/', 1)[-1], {}).get('properties', {}))\n"
            "print(json.dumps(sorted(keys)))\n")
    out = subprocess.run([SYSTEM_PYTHON, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return frozenset(json.loads(out.stdout))


def check_cloud_init_schema(user_data: str) -> tuple[bool, str]:
    missing = _missing_tool("cloud-init", "cloud-init")
    if missing:
        return missing
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as fh:
        fh.write(user_data)
    try:
        result = subprocess.run(["cloud-init", "schema", "--config-file", fh.name], capture_output=True,
                                text=True, timeout=120)
    finally:
        Path(fh.name).unlink()
    output = (result.stdout + result.stderr).strip()
    return result.returncode == 0, output.replace(fh.name, "user-data")


def check_top_level_keys(user_data: str) -> tuple[bool, str]:
    doc = yaml.safe_load(user_data)
    if not isinstance(doc, dict):
        return False, "user-data is not a YAML mapping"
    unknown = sorted(set(doc) - cloud_init_top_level_keys())
    if unknown:
        return False, f"keys cloud-init does not know (it would ignore them silently): {', '.join(unknown)}"
    return True, f"{len(doc)} top-level keys, all known to cloud-init: {', '.join(doc)}"


# ---- shellcheck -------------------------------------------------------------------------------

def check_shell(path: str, content: str) -> tuple[bool, str]:
    missing = _missing_tool("shellcheck", "shellcheck")
    if missing:
        return missing
    # SC2016 (info: "expressions don't expand in single quotes") flags every config value that holds a $ or a
    # backtick, because shlex.quote single-quotes it precisely so that it does not expand. Every other finding,
    # of every level (SC2086, an unquoted expansion, is info too), still fails the check.
    result = subprocess.run(["shellcheck", "--shell=bash", "--format=json1", "--exclude=SC2016", "-"],
                            input=content, capture_output=True, text=True, timeout=120)
    comments = json.loads(result.stdout or "{}").get("comments", [])
    if not comments:
        return True, "no findings"
    found = [f"line {c['line']}: SC{c['code']} {c['level']}: {c['message']}" for c in comments]
    return False, f"{len(found)} finding(s): " + " | ".join(found)


# ---- systemd ----------------------------------------------------------------------------------

SYSTEM_UNITS = Path("/usr/lib/systemd/system")
# Units the engines depend on that a provisioning step installs (30-docker: Docker's docker-ce package; 40-engine
# on the ray target: the head node, which ray-serve-app.service needs).
STEP_UNITS = ("docker.service", "ray-head.service")
_EXEC_KEYS = ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost")


def _unit_commands(unit: str) -> list[str]:
    """The absolute program paths of a unit's Exec*= lines (prefixes such as '-' or '+' dropped)."""
    text = unit.replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in _EXEC_KEYS:
            program = value.strip().lstrip("-@:+!").split(" ", 1)[0]
            if program.startswith("/"):
                commands.append(program)
    return commands


@lru_cache(maxsize=1)
def _systemd_root() -> Path:
    """A throwaway root holding a copy of this machine's system units (verify loads each unit's dependencies
    from the root; a symlink out of it is not followed), made once per process and removed at exit."""
    root = Path(tempfile.mkdtemp(prefix="llmdeploy-systemd-"))
    atexit.register(shutil.rmtree, root, True)
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    return root


def check_systemd_unit(name: str, content: str) -> tuple[bool, str]:
    """`systemd-analyze verify` of the unit as the VM installs it, in a throwaway root that holds this machine's
    system units, a stand-in for each of STEP_UNITS, and at each Exec*= path a stand-in program: the provisioning
    step installs the real one (llama.cpp's venv, docker, ollama), and verify refuses a unit whose program is
    missing. It needs no systemd running: it parses the unit, resolves specifiers and quoting, and loads its
    dependencies. Warnings that systemd would ignore a line (a bad specifier in Environment=) fail the check too."""
    missing = _missing_tool("systemd-analyze", "systemd")
    if missing:
        return missing
    root = _systemd_root()
    own = [root / folder for folder in ("etc", "opt", "bin", "sbin", "usr/bin", "usr/sbin", "usr/local")]
    for folder in own:
        shutil.rmtree(folder, ignore_errors=True)
    unit_dir = root / "etc/systemd/system"
    unit_dir.mkdir(parents=True)
    (unit_dir / name).write_text(content, encoding="utf-8")
    for other in STEP_UNITS:
        (unit_dir / other).write_text("[Service]\nExecStart=/usr/bin/true\n", encoding="utf-8")
    for program in ["/usr/bin/true", *_unit_commands(content)]:
        stand_in = root / program.lstrip("/")
        if not any(stand_in.is_relative_to(folder) for folder in own):
            continue  # under /usr/lib: verify then reports it missing
        stand_in.parent.mkdir(parents=True, exist_ok=True)
        stand_in.write_text("#!/bin/sh\n", encoding="utf-8")
        stand_in.chmod(0o755)
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}", name],
                            capture_output=True, text=True, timeout=60)
    output = (result.stderr + result.stdout).replace(str(root), "").strip()
    return result.returncode == 0 and not output, output or "no findings"


# ---- nginx ------------------------------------------------------------------------------------

NGINX_TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_main_conf(site_path: Path, workdir: Path, root_user: bool) -> str:
    """A minimal main config that includes the site and keeps nginx's pid, logs and temp files in workdir."""
    temp_paths = "".join(f"    {kind}_temp_path {workdir}/tmp/{kind};\n" for kind in NGINX_TEMP_KINDS)
    return ("user root;\n" if root_user else "") + (
        "worker_processes 1;\n"
        f"pid {workdir}/nginx.pid;\n"
        f"error_log {workdir}/error.log info;\n"
        "events {\n    worker_connections 256;\n}\n"
        "http {\n"
        "    include /etc/nginx/mime.types;\n"
        f"    access_log {workdir}/access.log;\n"
        f"{temp_paths}"
        f"    include {site_path};\n"
        "}\n")


def write_nginx_main_conf(site_path: Path, workdir: Path, root_user: bool = False) -> Path:
    workdir = workdir.resolve()
    for kind in NGINX_TEMP_KINDS:
        (workdir / "tmp" / kind).mkdir(parents=True, exist_ok=True)
    conf = workdir / "nginx.conf"
    conf.write_text(nginx_main_conf(site_path.resolve(), workdir, root_user), encoding="utf-8")
    return conf


def nginx_command(conf: Path) -> list[str]:
    # -e: the log to use before the config is read (nginx's default is under /var/log/nginx).
    return ["nginx", "-c", str(conf), "-p", str(conf.parent), "-e", str(conf.parent / "error.log")]


def install_throwaway_files(rendered: Rendered, host_layout: HostLayout) -> None:
    """Everything the site refers to, under host_layout.root: a throwaway certificate, htpasswd, empty key map."""
    paths = host_layout.paths
    tls = Path(paths.tls_dir)
    tls.mkdir(parents=True, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=llmdeploy-validate",
                    "-keyout", str(tls / "privkey.pem"), "-out", str(tls / "fullchain.pem")],
                   check=True, capture_output=True, timeout=60)
    Path(paths.secrets_dir).mkdir(parents=True, exist_ok=True)
    Path(paths.api_keys_map).touch()
    Path(paths.htpasswd).write_text(rendered.file(f"{FILES_DIR}/htpasswd").content, encoding="utf-8")
    Path(paths.acme_webroot).mkdir(parents=True, exist_ok=True)
    Path(paths.usage_log).parent.mkdir(parents=True, exist_ok=True)


def check_nginx(cfg: StackConfig) -> tuple[bool, str]:
    """nginx -t on the site as rendered for the VM, with its file paths moved under a temporary root."""
    missing = _missing_tool("nginx", "nginx")
    if missing:
        return missing
    with tempfile.TemporaryDirectory(prefix="llmdeploy-nginx-") as tmp:
        host_layout = HostLayout(root=tmp)
        rendered = render(cfg, host_layout)
        install_throwaway_files(rendered, host_layout)
        site = Path(tmp) / "site.conf"
        site.write_text(rendered.nginx_site, encoding="utf-8")
        conf = write_nginx_main_conf(site, Path(tmp) / "nginx")
        result = subprocess.run([*nginx_command(conf), "-t"], capture_output=True, text=True, timeout=60)
        return result.returncode == 0, (result.stderr + result.stdout).replace(tmp, "<tmp>").strip()


# ---- secrets and size -------------------------------------------------------------------------

def check_no_secrets(cfg: StackConfig, rendered: Rendered) -> tuple[bool, str]:
    """Neither the metadata (user-data, plain and encoded) nor the bundle (each file, and the archive) holds a
    secret value."""
    encoded = encode_user_data(rendered.user_data)
    decoded = gzip.decompress(b64decode(encoded)).decode()
    archive = gzip.decompress(rendered.bundle).decode("utf-8", "replace") if rendered.bundle else ""
    texts = [rendered.user_data, decoded, encoded, archive, *(f.content for f in rendered.files)]
    leaked = [k for k, v in cfg.secrets().items() if any(v in text for text in texts)]
    if leaked:
        return False, f"secret values found in user-data or the bundle: {', '.join(leaked)}"
    return True, f"none of the {len(cfg.secrets())} secret value(s) appear in user-data or the bundle"


def check_size(rendered: Rendered) -> tuple[bool, str]:
    """The instance metadata as OCI counts it (stack/vm.py sends Provisioning.metadata()), against OCI's limit."""
    boot = rendered.provisioning
    size = boot.metadata_bytes()
    problem = boot.metadata_problem("this machine")
    return not problem, (problem or f"{size} bytes of instance metadata (limit {OCI_METADATA_LIMIT}; user-data "
                                     f"{len(rendered.user_data)} bytes plain); the bundle, {len(rendered.bundle)} "
                                     f"bytes, goes over SSH")


def run_all(cfg: StackConfig, rendered: Rendered | None = None) -> list[CheckResult]:
    rendered = rendered or render(cfg)
    checks = [
        _timed("cloud-init schema", lambda: check_cloud_init_schema(rendered.user_data)),
        _timed("cloud-init top-level keys", lambda: check_top_level_keys(rendered.user_data)),
        _timed("no secrets in user-data or bundle", lambda: check_no_secrets(cfg, rendered)),
        _timed("instance metadata size", lambda: check_size(rendered)),
    ]
    if rendered.has_nginx:  # a Ray worker runs no nginx
        checks.append(_timed("nginx -t", lambda: check_nginx(cfg)))
    for f in rendered.shell_scripts():
        checks.append(_timed(f"shellcheck {Path(f.path).name}", lambda f=f: check_shell(f.path, f.content)))
    for f in rendered.files:
        if f.path.endswith(".service"):
            name = Path(f.path).name
            checks.append(_timed(f"systemd-analyze verify {name}", lambda f=f, name=name: check_systemd_unit(
                name, f.content)))
    return checks


# ---- many endpoints (workshops) ------------------------------------------------------------------

# Stands for an endpoint's domain when comparing endpoints; no template or config value holds a NUL.
_DOMAIN_MARK = "\0domain\0"


@dataclass(frozen=True)
class EndpointReport:
    name: str
    cfg: StackConfig
    checks: list[CheckResult]


def _output_digest(rendered: Rendered, domain: str) -> str:
    """What an endpoint renders (the user-data, less the bundle's digest, and every bundle file), with its own
    domain blanked out."""
    text = "\0".join([rendered.user_data.replace(rendered.bundle_digest, ""),
                       *(f"{f.path}\0{f.mode}\0{f.content}" for f in rendered.bundle_files)])
    text = text.replace(domain, _DOMAIN_MARK) if domain else text
    return hashlib.sha256(text.encode()).hexdigest()


def run_endpoints(endpoints: list[tuple[str, StackConfig]]) -> list[EndpointReport]:
    """Every check for each distinct output, and only what differs for the rest.

    The attendees of a dedicated workshop render the same user-data apart from their hostname, and that has
    passed config's domain check (a-z, 0-9, '.', '-': nothing a shell, nginx or YAML reads specially). So
    endpoints whose output is the same once their own domain is blanked out form a group; the one with the
    longest domain (nginx's server_name hash has a size limit) gets every check, and each of the others gets
    the checks whose answer depends on its own bytes: secrets and the metadata size limit."""
    groups: dict[str, tuple[str, StackConfig, Rendered]] = {}
    group_of: dict[str, str] = {}
    own: dict[str, list[CheckResult]] = {}
    machines = [(machine_name(name, node), cfg, rendered)
                for name, cfg in endpoints for node, rendered in render_nodes(cfg)]
    for name, cfg, rendered in machines:
        digest = _output_digest(rendered, cfg.domain)
        group_of[name] = digest
        best = groups.get(digest)
        if best is None or len(cfg.domain) > len(best[1].domain):
            groups[digest] = (name, cfg, rendered)
        own[name] = [_timed("no secrets in user-data or bundle", lambda: check_no_secrets(cfg, rendered)),
                     _timed("instance metadata size", lambda: check_size(rendered))]
    full = {digest: run_all(cfg, rendered) for digest, (_, cfg, rendered) in groups.items()}
    reports = []
    for name, cfg, _ in machines:
        digest = group_of[name]
        checked = groups[digest][0]
        if name == checked:
            reports.append(EndpointReport(name, cfg, full[digest]))
            continue
        same = _result("same output as checked endpoint", all(c.ok for c in full[digest]),
                       f"as '{checked}' but for the domain ({len(full[digest])} checks run there)")
        reports.append(EndpointReport(name, cfg, [same, *own[name]]))
    return reports
