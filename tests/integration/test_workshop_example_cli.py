"""The example workshop stack through the installed command: `workshop plan --offline` counts the active
attendees, and `llmdeploy validate` checks every attendee's endpoint with the real tools (cloud-init schema,
shellcheck, nginx -t, systemd-analyze). The rest of the example is tests/unit/test_workshop_example.py."""
import subprocess
import sys

from support.project import ROOT
from support.workshop_example import STACK, active_ids


def test_validate_checks_every_attendees_endpoint_with_the_real_tools() -> None:
    done = subprocess.run([sys.executable, "-m", "llmdeploy.cli", "validate", "--stack", STACK], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    for attendee in active_ids():
        assert f"stack '{STACK}', endpoint '{attendee}'" in done.stdout
    # Attendees whose output differs only in their hostname share one full run of the checks.
    full, same = done.stdout.count("nginx -t"), done.stdout.count("same output as checked endpoint")
    assert full >= 1 and full + same == len(active_ids()) and "FAIL" not in done.stdout


def test_plan_offline_counts_the_active_attendees() -> None:
    done = subprocess.run([sys.executable, "-m", "llmdeploy.cli", "workshop", "plan", "--stack", STACK, "--offline"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(active_ids())} active attendee(s), 1 revoked" in done.stdout
    assert f"{len(active_ids())} instance(s)" in done.stdout
