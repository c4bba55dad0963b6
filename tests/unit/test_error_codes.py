"""Every error class llmdeploy defines is a UsageError (exit 2) or a Failure (exit 1), and the real CLI turns
each into its message and that code, for every command family, never a traceback (in-process; the same
from a real process: tests/integration/test_cli_subprocess.py).

Why: the codes are the operator's (and Pulumi's, and CI's) only signal of "fix your input" against "it ran and
broke"; before llmdeploy/errors.py each sub-CLI caught its own list of classes, and a class missing from a
list (HubError, StreamRefused...) reached the user as a traceback.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import pytest

import llmdeploy
from llmdeploy import cli
from llmdeploy.cli import main
from llmdeploy.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, Failure, LlmdeployError, UsageError
from llmdeploy.local import cli as local_cli
from llmdeploy.smoke import cli as smoke_cli
from llmdeploy.workshop import cli as workshop_cli



def _error_classes() -> list[type[BaseException]]:
    """Every exception class defined in a module of the llmdeploy package (the Pulumi program's included)."""
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(llmdeploy.__path__, "llmdeploy."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.startswith("llmdeploy."):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[name] for name in sorted(found)]


def _name(cls: type[BaseException]) -> str:
    return f"{cls.__module__.removeprefix('llmdeploy.')}.{cls.__qualname__}"


ERRORS = _error_classes()
BASES = {LlmdeployError, UsageError, Failure}


def test_the_package_defines_the_errors_this_test_walks() -> None:
    names = {cls.__name__ for cls in ERRORS}
    assert {"ConfigError", "StackFileError", "RosterError", "TargetError", "LocalError", "SshError",
            "HostKeyMismatch", "ProvisionFailed"} <= names, names


@pytest.mark.parametrize("cls", ERRORS, ids=_name)
def test_every_error_class_is_a_usage_error_or_a_failure(cls: type[BaseException]) -> None:
    if cls in BASES:
        return
    assert issubclass(cls, UsageError) != issubclass(cls, Failure), f"{cls} must derive from UsageError or Failure"


def _instance(cls: type[BaseException], message: str) -> BaseException:
    """An instance whose str() is `message`, whatever the class's own __init__ takes."""
    exc = cls.__new__(cls)
    BaseException.__init__(exc, message)
    return exc


# One command per family, with the prefix its messages carry.
COMMANDS = [
    (cli, "cmd_render", ["render", "--stack", "s"], "llmdeploy"),
    (smoke_cli, "cmd_smoke", ["smoke", "https://llm.example.com"], "llmdeploy smoke"),
    (workshop_cli, "cmd_plan", ["workshop", "plan", "--stack", "s"], "llmdeploy workshop plan"),
    (workshop_cli, "cmd_reap", ["reap", "--expired"], "llmdeploy reap"),
    (local_cli, "cmd_local_status", ["local", "status"], "llmdeploy local"),
]


def _raising(exc: BaseException) -> Any:
    def command(args: Any) -> int:
        raise exc
    return command


# Each class through one command family (in turn), and both bases through every family.
CASES = [(cls, COMMANDS[i % len(COMMANDS)]) for i, cls in enumerate(c for c in ERRORS if c not in BASES)]
CASES += [(base, command) for base in (UsageError, Failure) for command in COMMANDS]


@pytest.mark.parametrize("cls, command", CASES, ids=[f"{_name(c)}-{cmd[3]}" for c, cmd in CASES])
def test_each_error_exits_with_its_code_through_the_cli(cls: type[BaseException],
                                                         command: tuple[Any, str, list[str], str],
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    module, name, argv, prefix = command
    monkeypatch.setattr(module, name, _raising(_instance(cls, "what went wrong; how to fix it")))
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == (EXIT_USAGE if issubclass(cls, UsageError) else EXIT_FAILED)
    assert err == f"{prefix}: what went wrong; how to fix it\n" and out == ""


@pytest.mark.parametrize("exc, code, message", [
    (KeyboardInterrupt(), EXIT_INTERRUPTED, "interrupted"),
    (FileNotFoundError(2, "No such file or directory", "/no/such/file"), EXIT_FAILED,
     "No such file or directory: /no/such/file"),
])
def test_interrupts_and_os_errors_too(exc: BaseException, code: int, message: str, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(local_cli, "cmd_local_status", _raising(exc))
    assert main(["local", "status"]) == code
    assert capsys.readouterr().err == f"llmdeploy local: {message}\n"
