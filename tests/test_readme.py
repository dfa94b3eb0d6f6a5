"""The README's Python example runs as written."""

from __future__ import annotations

import re

from tests.conftest import REPO


def test_readme_api_example_runs(tmp_path, monkeypatch, capsys):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    first, *rest = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len([line for line in first.splitlines() if line.strip()]) == 5
    monkeypatch.chdir(tmp_path)
    exec(compile("\n".join([first, *rest]), "README.md", "exec"), {})
    assert "4089184256" in capsys.readouterr().out
    assert (tmp_path / "resnet50.png").is_file()
    assert (tmp_path / "pruned" / "plan.json").is_file()  # the pruning example ran too
