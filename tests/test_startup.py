"""A fast start: --help and one-line errors load no heavy optional library (timing lives in
benchmarks/startup.py; a test never asserts wall time)."""

from __future__ import annotations

import json
import subprocess
import sys

import energyprune

HEAVY = ("torchao", "scipy", "optuna", "transformers", "matplotlib", "zeus", "torch_pruning",
         "sympy", "torchvision", "sklearn", "safetensors")  # fmt: skip


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    return sorted({m.split(".")[0] for m in modules} & set(HEAVY))


def test_help_and_a_flag_error_import_no_heavy_library():
    assert _loaded_after("import energyprune.cli as c\nc.build_parser()") == []
    bad_flag = (
        "from energyprune.cli import main\n"
        "try:\n    main(['prune', 'resnet20', '--target-energy', '50', '--out', 'x'])\n"
        "except SystemExit as e:\n    assert e.code == 2"
    )
    assert _loaded_after(bad_flag) == []
    assert _loaded_after("import energyprune") == []


def test_the_lazy_api_names_every_export():
    assert set(energyprune.__all__) == {*energyprune._EXPORTS, "__version__"}
    for name in energyprune.__all__:
        assert getattr(energyprune, name) is not None, name


def test_spec_names_are_the_registries():
    from energyprune.pruning.allocate import STRATEGIES
    from energyprune.pruning.importance import CRITERIA
    from energyprune.pruning.spec import CRITERION_NAMES, STRATEGY_NAMES

    assert tuple(CRITERIA) == CRITERION_NAMES and tuple(STRATEGIES) == STRATEGY_NAMES
