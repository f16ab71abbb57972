"""Every command in the README is checked: CLI commands compose with their exact overrides (Hydra), sweep
expressions parse, benchmarks and recipes answer; the rest is run by the named tests or by .ci/run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import ROOT
from masklab.sweep.space import parse

CONFIG_OF = {"train": "config", "prepare": "prepare", "evaluate": "evaluate", "predict": "predict", "report": "report"}
#: commands run elsewhere (the test or CI that runs each)
ELSEWHERE = {
    "pip": ".ci/run",
    "mlflow": "tests/test_mlflow_ui.py",
    "dvc": "tests/test_dvc.py",
    "export": "tests/test_distributed.py",  # the several-machines setup: its tests run those services and commands
}
SWEEP = re.compile(r"^[\w./@+~-]+=(choice|range|interval|tag)\(|^[\w./]+=[^=]*,[^=]*$")


def readme_commands(path=ROOT / "README.md") -> list[str]:
    text = path.read_text()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].strip()
            if line and not line.startswith("#"):
                cmds += [c.strip() for c in line.split("&&")]
    return cmds


def split(cmd: str) -> list[str]:
    words = shlex.split(cmd)
    while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value prefix
        words = words[1:]
    return words


COMMANDS = readme_commands() + readme_commands(ROOT / "experiments" / "README.md")


def test_readme_has_the_commands_of_every_section():
    tools = {split(c)[0] if split(c)[0] != "python" else split(c)[1] for c in COMMANDS}
    assert {
        "src/train.py",
        "src/prepare.py",
        "src/evaluate.py",
        "src/predict.py",
        "src/report.py",
        "pip",
        "mlflow",
        "dvc",
        "experiments/run.py",
        "benchmarks/overhead.py",
    } <= tools


@pytest.fixture(scope="module")
def benchmark_help():
    """``--help`` of every benchmark the READMEs name, side by side: {script: exit code}."""
    scripts = sorted({split(c)[1] for c in COMMANDS if _benchmark(c)})
    procs = {
        s: subprocess.Popen(
            [sys.executable, str(ROOT / s), "--help"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        for s in scripts
    }
    return {s: (p.wait(timeout=180), p.stderr.read()[-2000:]) for s, p in procs.items()}


def _benchmark(cmd: str) -> bool:
    words = split(cmd)
    return words[0] == "python" and words[1].startswith("benchmarks/")


# the benchmarks' cases on one xdist worker: their module fixture starts every benchmark once, not once per worker
@pytest.mark.parametrize(
    "cmd", [pytest.param(c, marks=pytest.mark.xdist_group("benchmark_help")) if _benchmark(c) else c for c in COMMANDS]
)
def test_readme_command(cmd, request):
    words = split(cmd)
    if words[0] in ELSEWHERE:
        return  # run by ELSEWHERE[words[0]]
    assert words[0] == "python", cmd
    if words[1] == "-m":
        assert words[2] == "pytest"  # the test command itself: .ci/run runs it
        return
    script, args = words[1], words[2:]
    if script.startswith("benchmarks/"):
        code, err = request.getfixturevalue("benchmark_help")[script]
        assert code == 0, err
    elif script == "experiments/run.py":
        sys.path.insert(0, str(ROOT / "experiments"))
        import run

        name = next((a for a in args if not a.startswith("-") and "=" not in a), None)
        if name:
            GlobalHydra.instance().clear()
            run.load(name, [a for a in args if "=" in a])
    else:
        compose_cli(script, args)


def compose_cli(script: str, args: list[str]) -> None:
    name = CONFIG_OF[script.split("/")[-1][:-3]]
    config_dir = ROOT / "conf"
    if "--help" in args or "--cfg" in args:
        return  # --help is run by test_train_e2e; nothing to compose
    if "--config-dir" in args:
        i = args.index("--config-dir")
        extra_dir, args = ROOT / args[i + 1], args[:i] + args[i + 2 :]
        if not extra_dir.is_dir():
            return  # a study's output folder: tests/test_sweep.py composes +tuned=best from one
        if "--config-name" in args:
            j = args.index("--config-name")
            config_dir, name, args = extra_dir, args[j + 1], args[:j] + args[j + 2 :]
    multirun = "-m" in args
    args = [a for a in args if a != "-m"]
    sweeps = [a for a in args if SWEEP.match(a)]
    if multirun:
        parse({}, {}, sweeps)
    overrides = [a for a in args if a not in sweeps]
    GlobalHydra.instance().clear()
    searchpath = [f"hydra.searchpath=[file://{ROOT / 'conf'}]"] if config_dir != ROOT / "conf" else []
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        compose(name, overrides=[*searchpath, *overrides], return_hydra_config=multirun)


def test_the_group_table_lists_every_option_of_its_groups():
    """The README's table of config groups is how people find an option: one added under conf/ and not
    listed there (augmentation=flip_clahe, data=prepared were) is an option nobody finds."""
    table = (ROOT / "README.md").read_text().split("| group | options | what it sets |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", table, re.M)
    assert {g for g, _ in rows} >= {
        "data",
        "model",
        "backbone",
        "anchors",
        "nms",
        "augmentation",
        "schedule",
        "optimizer",
    }
    for group, options in rows:
        files = {p.stem for p in (ROOT / "conf" / group).glob("*.yaml")}
        assert set(re.findall(r"`(\w+)`", options)) == files, group
