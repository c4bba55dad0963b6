"""Property: a hostile value in any string key either is refused by parse, or renders output that the real tools
accept and in which the value is inert.

Why: a fuzzer found values that parse accepted and that broke the output (a newline in a key name wrote an nginx
directive, a '%' in a file name broke the systemd unit). Hypothesis puts shell, YAML, nginx and systemd syntax
into every string key declared in Pulumi.yaml (and into each list key's entries). Whenever parse accepts the
config, for the rendered output:
- user-data passes cloud-init's schema (Debian's cloud-init, in process) and knows only cloud-init's top-level
  keys, and reads back as exactly the files it installs;
- every shell script passes `bash -n`; the nginx site passes the real `nginx -t`; every systemd unit passes
  `systemd-analyze verify`;
- no payload can run: each payload carries a marker and shell syntax; wherever the value reaches a shell script
  it is the single word shlex.quote() makes of it, bash reads that spot as unquoted shell syntax (a lone quote
  there breaks `bash -n`), and that word evaluates back to the value. The nginx site and the units hold no
  payload at all (values reach them only when validated to a safe alphabet);
- nothing ran: the marker file does not exist.
bash -n parses and never executes; the one thing executed is `printf %s WORD` with PATH emptied.
"""
from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings, strategies as st

from llmdeploy.config import ConfigError, parse
from llmdeploy.declared import declarations
from llmdeploy.render import FILES_DIR, HostLayout, Rendered, render
from llmdeploy.validate import (SYSTEM_PYTHON, check_systemd_unit, cloud_init_top_level_keys, install_throwaway_files,
                                nginx_command, write_nginx_main_conf)
from support.project import SSH_KEY

MARK = Path(tempfile.gettempdir()) / f"llmdeploy-pwned-{os.getpid()}"
# Each runs the builtin `:` with a redirection if bash ever executes it: the marker appears, with no PATH needed.
PAYLOADS = [f"$(:>{MARK})", f"`:>{MARK}`", f";:>{MARK};", f"|:>{MARK}", f"&&:>{MARK}", f"\n:>{MARK}\n",
            f"'$(:>{MARK})'", f"\"$(:>{MARK})\"", f"\\';:>{MARK};#"]
# Syntax of the other contexts: YAML, nginx, systemd, Jinja, JSON, and characters that trip parsers.
SYNTAX = ["'", '"', "\\", "%", "%n", "$HOME", "${x}", "#", "*", "?", "~", "!", "\n", "\r", "\t", " ", "\0", "\x1b",
          "\u2028", "\ufeff", "é", ": ", "- ", "&a", "*a", "!!python/object:os.system", "{", "}", ";", "{{ x }}",
          "{% raw %}", "include /etc/passwd;", "\n#cloud-config\n", "\n:60r/m", "\n.", "..", "/", "?x=1", "=",
          "-----BEGIN CERTIFICATE-----"]
# A value each empty-by-default key accepts, so the hostile part lands where the key is actually used.
GOOD = {"domain": "llm.example.org", "acmeEmail": "ops@example.org", "modelName": "m", "modelParamsBillions": "7",
        "aptMirrorUrl": "https://mirror.example.org/ubuntu", "ollamaRegistryUrl": "registry.example.org",
        "xinferenceCustomModel": '{"model_name": "qwen2.5-instruct"}', "expiresAt": "2099-01-01T00:00:00Z",
        "dnsZone": "example.org", "workshopDomain": "ws.example.org", "tags": "team=ml", "apiKeys": "ci:60r/m",
        "basicAuthUsers": "alice", "sshPublicKeys": SSH_KEY, "sshAllowedCidrs": "203.0.113.0/24",
        "imageId": "ocid1.image.oc1..x", "availabilityDomain": "AD-1", "dsContainerImage": "iad.ocir.io/t/v:1"}
ENGINES = {"ollama": "VM.GPU.A10.1", "xinference": "VM.GPU.A10.1", "vllm": "VM.GPU.A10.1",
           "llamacpp": "VM.Standard.E4.Flex"}
# A roster path makes a workshop, rendered per endpoint through its roster (tests/unit/test_pulumi_workshop.py).
SKIP = {"workshopRoster"}
DECLS = declarations()
KEYS = sorted(k for k, d in DECLS.items() if d.type in ("string", "array") and k not in SKIP)
# Per key: every key gets its examples (a draw over all keys left some without one).
EXAMPLES_PER_KEY = int(os.environ.get("LLMDEPLOY_PROPERTY_EXAMPLES_PER_KEY", "5"))


def base_raw(engine: str) -> dict[str, Any]:
    return {"compartmentId": "ocid1.compartment.oc1..aaaatest", "sshPublicKeys": [SSH_KEY], "engine": engine,
            "shape": ENGINES[engine], "tlsMode": "letsencrypt", "domain": "llm.example.org",
            "acmeEmail": "ops@example.org", "modelName": "m", "aptMirrorUrl": "https://mirror.example.org/debian"}


def with_value(engine: str, key: str, value: Any) -> dict[str, Any]:
    raw = base_raw(engine) | {key: value}
    if key == "basicAuthUsers":  # each user needs a password (bcrypt makes basic auth slow: only here)
        raw["basicAuthPasswords"] = json.dumps({user.strip(): "a-long-passphrase" for user in value})
    return raw


@st.composite
def hostile(draw: st.DrawFn, key: str) -> tuple[str, Any]:
    """(engine, value): the key's good value with payloads and syntax put before, after, or inside it (at any
    character, and more often next to the punctuation that separates its parts: . / : @ =)."""
    engine = draw(st.sampled_from(sorted(ENGINES)))
    good = good_of(key)
    pieces = draw(st.lists(st.sampled_from(PAYLOADS + SYNTAX) | st.text(max_size=6), min_size=1, max_size=3))
    joints = [i for i, c in enumerate(good) if c in "./:@="] + [i + 1 for i, c in enumerate(good) if c in "./:@="]
    at = draw(st.sampled_from(joints) | st.integers(0, len(good)) if joints else st.integers(0, len(good)))
    junk = "".join(pieces)
    text = draw(st.sampled_from([good + junk, junk + good, good[:at] + junk + good[at:]]))
    return engine, [text] if DECLS[key].type == "array" else text


def good_of(key: str) -> str:
    default = DECLS[key].default
    return GOOD.get(key) or (default[0] if isinstance(default, list) and default else
                             default if isinstance(default, str) else "") or "x"


def lines(rendered: Rendered, path_end: str) -> dict[str, int]:
    return {f.path: f.content.count("\n") for f in rendered.files if f.path.endswith(path_end)}


@pytest.fixture(scope="module")
def schema_worker() -> Iterator[subprocess.Popen[str]]:
    """Debian's cloud-init schema validator in one long-lived system-Python process (a CLI run per example costs
    0.3 s): reads a JSON string of user-data per line, answers "" or the error."""
    code = ("import json, sys, yaml\n"
            "from cloudinit.config.schema import get_schema, validate_cloudconfig_schema\n"
            "schema = get_schema()\n"
            "for line in sys.stdin:\n"
            "    try:\n"
            "        validate_cloudconfig_schema(yaml.safe_load(json.loads(line)), schema, strict=True)\n"
            "        print(json.dumps(''), flush=True)\n"
            "    except Exception as exc:\n"
            "        print(json.dumps(f'{type(exc).__name__}: {exc}'), flush=True)\n")
    proc = subprocess.Popen([SYSTEM_PYTHON, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def schema_error(worker: subprocess.Popen[str], user_data: str) -> str:
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write(json.dumps(user_data) + "\n")
    worker.stdin.flush()
    return json.loads(worker.stdout.readline())


def bash_n(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def nginx_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every example's nginx -t: the throwaway certificate is made once (openssl costs more than
    nginx -t); each example writes its own site and htpasswd."""
    root = tmp_path_factory.mktemp("nginx-prop")
    cfg = parse(base_raw("llamacpp"))
    install_throwaway_files(render(cfg, HostLayout(root=str(root))), HostLayout(root=str(root)))
    return root


def nginx_t(cfg: Any, root: Path) -> tuple[bool, str]:
    host_layout = HostLayout(root=str(root))
    rendered = render(cfg, host_layout)
    Path(host_layout.paths.htpasswd).write_text(rendered.file(f"{FILES_DIR}/htpasswd").content, encoding="utf-8")
    site = root / "site.conf"
    site.write_text(rendered.nginx_site, encoding="utf-8")
    done = subprocess.run([*nginx_command(write_nginx_main_conf(site, root / "nginx")), "-t"],
                          capture_output=True, text=True, timeout=60)
    return done.returncode == 0, done.stderr


def quoting_problems(script: str, path: str, value: str) -> list[str]:
    """Where the value reaches this script as anything but one literal shell word."""
    word = shlex.quote(value)
    rest = script.replace(word, "")
    if "\n" not in value:  # a comment line ends at the newline, and the value holds none
        rest = "\n".join(line for line in rest.splitlines() if not line.lstrip().startswith("#"))
    problems = [f"{path}: payload outside the quoted word: {p!r}" for p in PAYLOADS if p in value and p in rest]
    if word == value or word not in script:
        return problems  # shlex found nothing to quote, or the value does not reach this script as it is
    if "\0" in value:
        return [*problems, f"{path}: holds a NUL byte (bash drops it from words)"]
    evaluated = subprocess.run(["/bin/bash", "-c", f"printf %s {word}"], capture_output=True, text=True, timeout=30,
                               env={"PATH": ""})
    if evaluated.stdout != value:
        problems.append(f"{path}: {word!r} evaluates to {evaluated.stdout!r}")
    start = 0
    while (at := script.find(word, start)) >= 0:
        start = at + len(word)
        if script[at - 1:at] == "$":
            problems.append(f"{path}: {word!r} follows '$' ($'...' reads backslash escapes)")
        # A lone quote in the word's place, and the script cut after that line: where bash reads quotes, it is
        # left open and bash -n fails. Left uncut, a later line's quote could close it (30-docker's grep '"nvidia"'
        # did, flagging a correctly quoted URL).
        line_end = script.find("\n", start)
        probe = script[:at] + "'" + (script[start:] if line_end < 0 else script[start:line_end + 1])
        if bash_n(probe).returncode == 0:
            problems.append(f"{path}: {word!r} sits where bash does not read quotes (a heredoc or double quotes)")
    return problems


def check_output(rendered: Rendered, cfg: Any, value: str, worker: subprocess.Popen[str], root: Path) -> list[str]:
    problems = []
    if error := schema_error(worker, rendered.user_data):
        problems.append(f"cloud-init schema: {error}")
    doc = yaml.safe_load(rendered.user_data)
    unknown = set(doc) - cloud_init_top_level_keys()
    if unknown:
        problems.append(f"unknown top-level keys {unknown}")
    with tarfile.open(fileobj=io.BytesIO(rendered.bundle), mode="r:gz") as tar:
        packed = {"/" + m.name: tar.extractfile(m).read().decode() for m in tar.getmembers()}  # type: ignore[union-attr]
    if {**{f["path"]: f["content"] for f in doc["write_files"]}, **packed} != {f.path: f.content for f in rendered.files}:
        problems.append("user-data and the bundle do not read back as the files they install")
    for f in rendered.shell_scripts():
        done = bash_n(f.content)
        if done.returncode != 0:
            problems.append(f"bash -n {f.path}: {done.stderr.strip()}")
        problems += quoting_problems(f.content, f.path, value)
    ok, detail = nginx_t(cfg, root)
    if not ok:
        problems.append(f"nginx -t: {detail.strip()}")
    for f in rendered.files:
        if f.path.endswith(".service") or f.path.endswith("nginx-site.conf"):
            problems += [f"{f.path}: holds the payload {p!r}" for p in PAYLOADS if p in value and p in f.content]
        if f.path.endswith(".service"):
            ok, detail = check_systemd_unit(Path(f.path).name, f.content)
            if not ok:
                problems.append(f"systemd-analyze verify {f.path}: {detail}")
    return problems


COUNTS = {"examples": 0, "accepted": 0}


@pytest.mark.parametrize("key", KEYS)
# The deadline is per example and generous: this machine's two cores are shared.
@settings(max_examples=EXAMPLES_PER_KEY, deadline=timedelta(seconds=10), database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_hostile_value_is_refused_or_inert(key: str, data: st.DataObject, schema_worker: subprocess.Popen[str],
                                             nginx_root: Path) -> None:
    engine, value = data.draw(hostile(key))
    COUNTS["examples"] += 1
    try:
        cfg = parse(with_value(engine, key, value))
    except ConfigError as exc:
        assert exc.problems and all(p.key and p.fix for p in exc.problems)
        return
    COUNTS["accepted"] += 1
    text = value[0] if isinstance(value, list) else value
    rendered = render(cfg)
    problems = check_output(rendered, cfg, text.strip(), schema_worker, nginx_root)
    # A value reaches the nginx site and the units only validated, so it cannot add a line to them (a newline in
    # a key name or domain did: a directive of its own). Compared with the key's good value in the same config.
    good_value = [good_of(key)] if isinstance(value, list) else good_of(key)
    try:
        good = render(parse(with_value(engine, key, good_value)))
    except ConfigError:
        good = None
    for end in ("nginx-site.conf", ".service") if good else ():
        if lines(good, end) != lines(rendered, end):
            problems.append(f"{end}: {lines(rendered, end)} lines, with the good value {lines(good, end)}")
    assert not problems, f"{key}={value!r} ({engine}):\n" + "\n".join(problems)
    assert not MARK.exists(), f"{key}={value!r} ran a payload"


def test_the_quoting_probe_tells_a_quoted_word_from_one_in_double_quotes_or_a_heredoc() -> None:
    """A URL with a '#' is one quoted word in 30-docker.sh, although later lines hold quotes of their own (the old
    probe let them close its lone quote, and failed the property test at random); in double quotes or a
    heredoc the same word is still caught."""
    value = "https://mirror.example.org/deb#"
    word = shlex.quote(value)
    assert quoting_problems(f"url={word}\ngrep -q '\"nvidia\"' f\n# it's\n", "s", value) == []
    assert "double quotes" in "".join(quoting_problems(f'echo "x {word} y"\necho \'z\'\n', "s", value))
    assert "heredoc" in "".join(quoting_problems(f"cat <<EOF\n{word}\nEOF\necho 'a'\n", "s", value))


def test_zz_report_the_count_of_examples() -> None:
    """Prints how many configs the property test tried and how many of them parse accepted (pytest -s)."""
    print(f"\nproperty test: {COUNTS['examples']} hostile configs, {COUNTS['accepted']} accepted and checked")
    assert not MARK.exists()
