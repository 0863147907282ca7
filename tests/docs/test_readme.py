"""The README is the front page: it starts with the two commands and the first job, fits on a
screen, and every link it has leads to a file of the repository (the docs site builds with
`mkdocs build --strict`, which checks the links of docs/ itself)."""

from __future__ import annotations

import re

from tests.helpers import REPO

README = (REPO / "README.md").read_text()


def test_readme_starts_with_the_two_commands_and_the_first_job():
    lines = README.split("\n")
    assert lines[0] == "# node-daemon"
    assert lines[3].startswith("bash scripts/run.sh ") and lines[4].startswith("bash scripts/test.sh ")
    first_job = README.index("Your first job")
    assert first_job < README.index("## "), "the first job comes before any section"
    assert "curl -s localhost:4000/api/jobs/stream" in README[first_job:README.index("## ")]


def test_readme_fits_on_a_screen():
    assert len(README.split("\n")) < 200


def test_every_relative_link_of_the_readme_leads_to_a_file_that_exists():
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    relative = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert len(relative) >= 10, relative
    missing = [link for link in relative if not (REPO / link).exists()]
    assert not missing, missing
