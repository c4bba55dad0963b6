"""The workshop roster: parsing with every problem reported at once, and a shared-layout assignment that
is balanced and never moves anyone when attendees are added at the end or revoked."""
from __future__ import annotations

from pathlib import Path

import pytest

from llmdeploy.roster import RosterError, active, assign, read_roster


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "roster.csv"
    path.write_text(text)
    return path


def test_a_good_roster_with_overrides_and_a_revoked_attendee(tmp_path: Path) -> None:
    people = read_roster(write(tmp_path, "\ufeffid,name,email,status,engine\n"
                                         "ada,Ada L,ada@example.org,,\n\n"
                                         "Bob,Bob K,bob@example.org,revoked,\n"
                                         "cyd,Cyd M,cyd@example.org,active,ollama\n"))
    assert [p.id for p in people] == ["ada", "bob", "cyd"]  # ids are lower-cased; blank lines skipped
    assert people[1].revoked and [p.id for p in active(people)] == ["ada", "cyd"]
    assert people[2].overrides == {"engine": "ollama"} and people[0].overrides == {}


@pytest.mark.parametrize("text, message", [
    ("id,name\nada,Ada\n", "missing column(s) email"),
    ("id,name,email,apiKeys\n", "unknown column(s) apiKeys"),
    ("id,name,email\n1ada,Ada,ada@example.org\n", "line 2: id '1ada'"),
    ("id,name,email\nada,Ada,ada@example.org\nada,Ada 2,ada2@example.org\n", "line 3: id 'ada' is already used on line 2"),
    ("id,name,email\nada,,ada@example.org\n", "line 2: attendee 'ada' has no name"),
    ("id,name,email\nada,Ada,not-an-address\n", "line 2: email 'not-an-address'"),
    ("id,name,email,status\nada,Ada,ada@example.org,gone\n", "status 'gone' must be empty, active or revoked"),
    ("id,name,email\n", "no attendees"),
])
def test_roster_problems_name_the_line_and_the_fix(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RosterError) as err:
        read_roster(write(tmp_path, text))
    assert message in str(err.value)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(RosterError, match="3 problem"):
        read_roster(write(tmp_path, "id,name,email\n-x,,bad\n"))


def test_a_missing_roster_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RosterError, match="cannot read the roster"):
        read_roster(tmp_path / "nope.csv")


def roster_of(tmp_path: Path, ids: list[str], revoked: tuple[str, ...] = ()) -> list:  # type: ignore[type-arg]
    rows = [f"{i},Name {i},{i}@example.org,{'revoked' if i in revoked else ''}" for i in ids]
    return read_roster(write(tmp_path, "id,name,email,status\n" + "\n".join(rows) + "\n"))


def test_assignment_is_balanced(tmp_path: Path) -> None:
    slots = assign(roster_of(tmp_path, [f"a{i}" for i in range(10)]), 3)
    counts = sorted(list(slots.values()).count(n) for n in range(3))
    assert counts == [3, 3, 4]


def test_adding_at_the_end_or_revoking_moves_no_one_else(tmp_path: Path) -> None:
    ids = [f"a{i}" for i in range(7)]
    before = assign(roster_of(tmp_path, ids), 3)
    grown = assign(roster_of(tmp_path, [*ids, "late"]), 3)
    revoked = assign(roster_of(tmp_path, ids, revoked=("a2",)), 3)
    assert all(grown[i] == before[i] for i in ids)
    assert "a2" not in revoked and all(revoked[i] == before[i] for i in ids if i != "a2")
