"""The ray head's two units, as the ray target renders them, under a real systemd (tests/support/systemd_boot.py):
whatever ends the head (a crash that Restart=always recovers, a stop and a start, a restart), the Serve app's
oneshot runs again once the head is back, so `serve deploy` hands the app to the new GCS (it keeps no external
store: a head that comes back without a deploy serves nothing, /healthz 503).

Only the two commands are stand-ins: the head's `ray start --block` is a `sleep` (a long-running main process,
as `--block` is), the app's deploy loop appends a line to a file. Every [Unit], [Install] and restart setting is
the rendered one; systemd decides. The old app unit (Requires= on the head, WantedBy=multi-user.target) came back
after a crash (systemd propagates an automatic restart over Requires=) but not after `systemctl stop` and
`start` of the head: the app stayed inactive, the API down. The real cluster's recovery (the endpoint answers
again after the head's `ray start` is killed) is in test_ray_cluster.py.

Needs root and systemd-nspawn (the machine has both); boots in about 2 s; run under the heavy lock.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.project import ROOT
from support.systemd_boot import Systemd, booted_systemd
from llmdeploy.render import FILES_DIR, render
from llmdeploy.stack_yaml import load_stack_config

HEAD, APP = "ray-head.service", "ray-serve-app.service"


def stand_in(unit: str, exec_start: str) -> str:
    """The rendered unit with its command replaced and no User=/Group= (the container has no ray user)."""
    lines = []
    for line in unit.splitlines():
        if line.startswith("ExecStart="):
            line = f"ExecStart={exec_start}"
        elif line.startswith("ExecStop="):
            line = "ExecStop=/bin/true"
        elif line.startswith(("User=", "Group=")):
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


def rendered_units() -> tuple[str, str]:
    head = render(load_stack_config(ROOT, "ray-a10"))
    return head.file(f"{FILES_DIR}/ray-head.service").content, head.file(f"{FILES_DIR}/ray-serve-app.service").content


def restart_sec(unit: str) -> float:
    (value,) = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("RestartSec=")]
    return float(value)


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Systemd]:
    head, app = rendered_units()
    with booted_systemd(tmp_path_factory.mktemp("ray-units"), "llmdeploy-ray-units") as box:
        box.install_unit(HEAD, stand_in(head, "/bin/sleep infinity"))
        box.install_unit(APP, stand_in(app, "/bin/sh -c 'echo deployed >> /srv/deploys'"))
        # network-online.target (the head is ordered after it) is reached at once on a VM; here, with no network
        # to wait for, its wait-online service would hold every start job for minutes.
        box.systemctl("mask", "systemd-networkd-wait-online.service")
        # As the head's step does: enable and start the head (_ray-install), then (re)enable and start the app.
        box.systemctl("daemon-reload")
        box.systemctl("enable", HEAD)
        box.systemctl("start", HEAD)
        box.systemctl("reenable", APP)
        box.systemctl("start", APP)
        yield box


def deploys(box: Systemd) -> int:
    path = box.shared / "deploys"
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_deploys(box: Systemd, count: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if deploys(box) >= count and box.systemctl("is-active", APP, check=False) == "active":
            return True
        time.sleep(0.2)
    return False


def test_the_app_deploys_when_the_head_starts(box: Systemd) -> None:
    assert wait_deploys(box, 1, 10), f"deploys {deploys(box)}, app {box.systemctl('is-active', APP, check=False)}"
    assert box.systemctl("is-enabled", APP) == "enabled"
    assert "ray-serve-app.service" in box.show(HEAD, "Wants")  # WantedBy=ray-head.service


def test_a_killed_head_comes_back_and_the_app_deploys_again(box: Systemd) -> None:
    before = deploys(box)
    main_pid = box.show(HEAD, "MainPID")
    killed = time.monotonic()
    box.run(["kill", "-9", main_pid])
    deadline = restart_sec(rendered_units()[0]) + 10
    assert wait_deploys(box, before + 1, deadline), \
        f"{deadline:.0f} s after the head's SIGKILL: deploys {deploys(box)} (before {before}), " \
        f"head {box.systemctl('is-active', HEAD, check=False)}, app {box.systemctl('is-active', APP, check=False)}"
    assert box.show(HEAD, "MainPID") != main_pid and box.show(HEAD, "NRestarts") == "1"
    print(f"head SIGKILLed: the app deployed again after {time.monotonic() - killed:.1f} s")


def test_a_stopped_head_stops_the_app_and_a_started_head_deploys_it_again(box: Systemd) -> None:
    before = deploys(box)
    box.systemctl("stop", HEAD)
    assert box.systemctl("is-active", APP, check=False) == "inactive"  # BindsTo=/PartOf=: no stale "active"
    box.systemctl("start", HEAD)
    assert wait_deploys(box, before + 1, 10), \
        f"after stop and start of the head: deploys {deploys(box)} (before {before}), " \
        f"app {box.systemctl('is-active', APP, check=False)}"


def test_a_restarted_head_deploys_the_app_again(box: Systemd) -> None:
    before = deploys(box)
    box.systemctl("restart", HEAD)
    assert wait_deploys(box, before + 1, 10), f"deploys {deploys(box)} (before {before})"
    # The app's start is ordered after the head's (After=): never a deploy before the head runs again.
    assert box.show(APP, "ActiveEnterTimestampMonotonic") >= box.show(HEAD, "ActiveEnterTimestampMonotonic")
