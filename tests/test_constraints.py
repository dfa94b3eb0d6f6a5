"""The constraints file pins every package we install (issue 38): same install, same figures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11+")

ROOT = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"].values():
        wanted += [Requirement(r) for r in extra]
    makefile = (ROOT / "Makefile").read_text()
    llm = re.search(r"^LLM_PACKAGES := (.+)$", makefile, re.M)
    assert llm, "Makefile: LLM_PACKAGES (what make llm installs) is gone"
    return wanted + [Requirement(name) for name in llm.group(1).split()]


def test_every_dependency_and_extra_is_pinned_within_its_range():
    pins = _pins()
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is installed but not in constraints.txt: run make lock"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt pins {req.name}=={pins[name]}, outside pyproject's {req.specifier}"
        )


def test_make_installs_through_the_constraints_file():
    makefile = (ROOT / "Makefile").read_text()
    setup = makefile.split("$(STAMP): ", 1)[1].split("\n\n", 1)[0]
    llm = makefile.split("\nllm: ", 1)[1].split("\n\n", 1)[0]
    for recipe in (setup, llm):
        installs = [ln for ln in recipe.splitlines() if "pip install" in ln]
        assert installs and all("$(PIP_C)" in ln for ln in installs)
    assert "-c $(CONSTRAINTS)" in makefile and "CONSTRAINTS := constraints.txt" in makefile
