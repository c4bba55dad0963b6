"""`llmdeploy workshop teardown` and `reap` refusing bad input and a missing OCI config before any request, and
the Search queries they write. Against the OCI stand-in: tests/integration/test_workshop_teardown.py."""
from pathlib import Path

import pytest

from llmdeploy.cli import main
from llmdeploy.workshop import teardown
from support.oci_api import parse_query, QueryError
from support.workshop_stack import COMPARTMENT, STACK, people, workshop_project


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return workshop_project(tmp_path, people(2))


def test_no_oci_config_is_a_clear_error(project: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["workshop", "teardown", "--stack", STACK, "--project-dir", str(project), "--yes",
                 "--oci-config", str(tmp_path / "missing")])
    _, err = capsys.readouterr()
    assert code == 2 and "no OCI config file at" in err and "oci setup config" in err


@pytest.mark.parametrize("argv, message", [
    (["reap"], "say what to reap: --expired"),
    (["reap", "--expired", "--compartment", "my-compartment"], "expected a compartment OCID"),
    (["reap", "--expired", "--wait", "-1"], "--wait must be 0 or more"),
])
def test_reap_bad_input(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_the_queries_llmdeploy_writes_are_ones_the_stand_in_understands() -> None:
    """The stand-in refuses queries outside its subset, so a typo in a query fails here, not silently."""
    for query in (teardown.stack_query("llmdeploy", "ws"), teardown.managed_query(COMPARTMENT),
                  teardown.managed_query()):
        assert parse_query(query)
    with pytest.raises(QueryError):
        parse_query("query all resources where freeformTags.key = 'stack'")
    with pytest.raises(Exception, match="quotes"):
        teardown.stack_query("llmdeploy", "x' || 'a")
