"""The layers are kept by import-linter's contracts (pyproject.toml): the tree keeps them, and an
import across a layer breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, capture_output=True, text=True,
                          env=env, timeout=120)


def test_the_tree_keeps_the_layers():
    proc = lint(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_a_report_importing_an_engine_breaks_them(tmp_path):
    shutil.copytree(ROOT / "src" / "visionbench", tmp_path / "src" / "visionbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    fmt = tmp_path / "src" / "visionbench" / "reporting" / "format.py"
    fmt.write_text(fmt.read_text() + "\nfrom visionbench.engines import get_engine  # noqa\n")
    proc = lint(tmp_path)
    assert proc.returncode != 0
    assert "the report reads results only" in proc.stdout and "BROKEN" in proc.stdout
    assert "visionbench.reporting.format -> visionbench.engines" in proc.stdout


def test_scenario_modules_stay_small_and_import_scenarios_at_the_top():
    """No file of scenarios/ over 350 lines, and none imports a scenarios module inside a function
    (the way around an import cycle that the contracts cannot see)."""
    import ast

    for path in (ROOT / "src" / "visionbench" / "scenarios").rglob("*.py"):
        text = path.read_text()
        assert len(text.splitlines()) <= 350, path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                inner = [n.module for n in ast.walk(node) if isinstance(n, ast.ImportFrom)]
                assert not [m for m in inner if m and m.startswith("visionbench.scenarios")], \
                    f"{path.name}: {node.name} imports a scenarios module inside a function"


def test_tune_and_the_report_name_no_engine_option():
    """tune (tune.py, search.py, setting.py) and the report read what an engine ran through its
    typed concurrency and its search space: no string literal there is an engine option's name."""
    import ast

    from visionbench.engines import all_options

    names = set(all_options())
    files = [ROOT / "src" / "visionbench" / "scenarios" / f for f in ("tune.py", "search.py", "setting.py")]
    files += list((ROOT / "src" / "visionbench" / "reporting").rglob("*.py"))
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert node.value not in names, f"{path.name} names the engine option {node.value!r}"
    for template in (ROOT / "src" / "visionbench" / "reporting" / "templates").glob("*.j2"):
        text = template.read_text()
        for name in names:
            assert f".{name}" not in text and f"'{name}'" not in text and f'"{name}"' not in text, \
                f"{template.name} reads the engine option {name!r}"


def test_the_front_doors_stay_short():
    """The command line's main file holds commands only (<= 250 lines: option groups and
    declared flags live elsewhere); the README is a front door (<= 200 lines: the reference is
    in docs/)."""
    assert len((ROOT / "src" / "visionbench" / "cli" / "main.py").read_text().splitlines()) <= 250
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


def test_loadgens_flags_are_generated_from_their_declarations():
    """Every field of mlperf's Options declared with ``flags.flag`` is a flag of the command,
    with its declared help; a field declared once needs no second list."""
    import dataclasses

    from visionbench.cli.main import cli
    from visionbench.scenarios.mlperf.settings import Options

    params = {p.name: p for p in cli.commands["mlperf"].params}
    declared = [f for f in dataclasses.fields(Options) if "help" in f.metadata]
    assert len(declared) >= 12
    for f in declared:
        assert f.name in params and params[f.name].help == f.metadata["help"], f.name


def test_every_declared_setting_is_a_flag_with_its_declared_help():
    """The run's sections, tune's and fleet's: each field declared with ``flags.flag`` is an
    option of the commands that offer its group, with its declared help; the help's defaults
    come from the constants (change one and the help follows)."""
    import dataclasses

    from visionbench import settings
    from visionbench.cli.main import cli

    command_of = {"study": "run", "modes": "run", "method": "run", "timing": "run",
                  "instances": "run", "environment": "run", "pipeline": "run",
                  None: None}
    for cls, default_command in ((settings.Study, None), (settings.Timing, None),
                                 (settings.Launch, None), (settings.Inputs, None),
                                 (settings.Tune, "tune"), (settings.Fleet, "fleet")):
        for f in dataclasses.fields(cls):
            if "help" not in f.metadata:
                continue
            command = default_command or command_of[f.metadata["group"]]
            params = {p.name: p for p in cli.commands[command].params}
            assert f.name in params, (cls.__name__, f.name)
            assert params[f.name].help == f.metadata["help"], f.name
    tune = {p.name for p in cli.commands["tune"].params}
    assert {"allocator", "omp_runtime", "env"} <= tune  # the environment tune searches
    params = {p.name: p for p in cli.commands["run"].params}
    assert f"[default: {settings.CALIBRATION_SAMPLES};" in params["calibration_samples"].help
    assert f"{settings.FULL['latency'].warmup} latency" in params["warmup"].help
    assert params["engines"].default == settings.DEFAULT_ENGINE


def test_the_stored_settings_are_derived_from_the_sections():
    """results.json's settings record has a typed field for every field of every section and
    nothing kept untyped: what a configuration writes loads back field for field, the engines'
    options flat beside them, and a key no one declared lands among the engine options."""
    import dataclasses

    from visionbench.config import RunConfig
    from visionbench.engines import all_options
    from visionbench.results.schema import RunSettings
    from visionbench.settings import SECTIONS

    assert RunSettings.model_config["extra"] == "forbid"
    declared = {f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls)}
    assert declared <= set(RunSettings.model_fields)
    cfg = RunConfig.of(engines=["openvino"], threads=2, duration=1.5, data=ROOT,
                       engine_options={"streams": 2})
    record = cfg.as_dict()
    stored = RunSettings.model_validate(record)
    assert stored.engine_options["streams"] == 2 and stored.duration == 1.5
    assert stored.data == str(ROOT) and isinstance(stored.data, str)
    assert stored.model_dump() == record
    assert set(all_options()) <= set(stored.model_dump())
