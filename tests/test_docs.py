"""The contributor docs cannot drift: every path, Python name, config key and command they name exists.

Checked in README.md, docs/ARCHITECTURE.md, docs/adding_a_method.md and docs/adding_a_task.md:

* paths (`sema/...`, `benchmarks/...`, `configs/...`, `tests/...`, `docs/...`, `scripts/...`, `results/...`), also
  the entries of ARCHITECTURE.md's layout tree, and `path.py::NAME` attributes;
* dotted names (`sema.X`, `benchmarks.x.y`): importable, attribute by attribute;
* config keys (`trainer.epochs`, `method.decay`, `task.data_root`, ...): fields of the composed config, of some
  task's Config or of some method's Settings;
* `sema-bench ...` commands: composed as the command line would (first value of each sweep list).

Names a doc introduces as an example of something to write (a method `my_average`, a task `tiny`) are skipped.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/ARCHITECTURE.md", "docs/adding_a_method.md", "docs/adding_a_task.md"]
EXAMPLES = ("my_average", "MyAverage", "tiny", "my_method", "test_my_average")  # what a doc tells you to write
TOP = ("sema", "benchmarks", "configs", "tests", "docs", "scripts", "results")
PATH = re.compile(r"(?<![\w./-])((?:%s)/[\w./-]*)" % "|".join(TOP))
CODE = re.compile(r"`([^`]+)`")
DOTTED = re.compile(r"^(?:sema|benchmarks)(?:\.\w+)+$")
KEY = re.compile(r"^(task|trainer|optim|method|averaging|logger)\.([\w.]+?)(?:=.*)?$")


def _text(doc: str) -> str:
    return (ROOT / doc).read_text()


def _skip(token: str) -> bool:
    return any(mark in token for mark in ("<", "*", "{", "...")) or any(e in token for e in EXAMPLES)


def _inline(doc: str) -> list[str]:
    prose = "".join(_text(doc).split("```")[0::2])  # outside the fenced blocks
    return [t.strip() for t in CODE.findall(prose)]


@pytest.mark.parametrize("doc", DOCS)
def test_named_paths_exist(doc):
    missing = []
    for match in PATH.findall(_text(doc)):
        path = match.rstrip(".,:;)")
        if _skip(path) or path.startswith("results/") and path.count("/") > 1:
            continue
        if not (ROOT / path).exists():
            missing.append(path)
    for token in _inline(doc):
        if "::" in token and not _skip(token):
            path, name = token.split("::", 1)
            module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
            if not hasattr(module, name.split(".")[0].split("[")[0]):
                missing.append(token)
    assert not missing, f"{doc} names paths that do not exist: {missing}"


def test_the_architecture_tree_lists_existing_files():
    block = _text("docs/ARCHITECTURE.md").split("```")[1]
    missing, folder = [], None
    for line in block.splitlines():
        if not line.strip():
            continue
        first = line.split()[0]
        if not line.startswith(" "):
            folder = first if first.endswith("/") and first.rstrip("/") in TOP else None
            if folder is None and "/" in first and not _skip(first):
                missing += [p for p in first.split(",") if p and not (ROOT / p).exists()]
            continue
        if folder is None or line.startswith("   "):  # deeper lines continue a description
            continue
        names = re.split(r",\s*", line.strip().split("  ")[0])
        for name in names:
            if name and not _skip(name) and not (ROOT / folder / name).exists():
                missing.append(folder + name)
    assert not missing, f"docs/ARCHITECTURE.md's tree lists files that do not exist: {missing}"


def _resolve(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@pytest.mark.parametrize("doc", DOCS)
def test_named_python_objects_exist(doc):
    names = {t.split("(")[0] for t in _inline(doc)}
    missing = sorted(n for n in names if DOTTED.match(n) and not _skip(n) and not _resolve(n))
    assert not missing, f"{doc} names Python objects that do not exist: {missing}"


def _known_keys() -> dict[str, set[str]]:
    import sema
    from benchmarks.config import LoggerConfig, OptimConfig, TrainerConfig, AveragingConfig
    from benchmarks.tasks import TASKS

    def fields(cls):
        return {f.name for f in dataclasses.fields(cls)}

    tasks = set().union(*(fields(importlib.import_module(m).Config) for m in TASKS.values()))
    methods = {"name", "averager"}.union(*(fields(cls.Settings) for cls in sema.METHODS.values()))
    logger = fields(LoggerConfig) | {f"wandb.{k}" for k in ("mode", "project", "entity", "group")}
    return {"task": tasks, "method": methods, "trainer": fields(TrainerConfig), "optim": fields(OptimConfig),
            "averaging": fields(AveragingConfig), "logger": logger}


@pytest.mark.parametrize("doc", DOCS)
def test_named_config_keys_exist(doc):
    known = _known_keys()
    unknown = []
    for token in _inline(doc):
        for part in token.split():
            m = KEY.match(part)
            if m and not _skip(part) and not part.endswith(".py") and m.group(2) not in known[m.group(1)]:
                unknown.append(part)
    assert not unknown, f"{doc} names config keys that do not exist: {unknown}"


def _commands(doc: str) -> list[str]:
    text = _text(doc)
    lines = []
    for block in text.split("```")[1::2]:
        body = block.split("\n", 1)[1] if "\n" in block else block
        joined = body.replace("\\\n", " ")
        lines += [line.split("#")[0].strip() for line in joined.splitlines() if line.strip().startswith("sema-bench")]
    lines += [t for t in _inline(doc) if t.startswith("sema-bench ")]
    return [line for line in lines if not _skip(line)]


def _first_value(arg: str) -> str:
    """key=a,b,c (a sweep) -> key=a; key=[a,b] (a list) as it is."""
    key, value = arg.split("=", 1)
    return arg if value.startswith("[") else f"{key}={value.split(',')[0]}"


@pytest.mark.parametrize("doc", DOCS)
def test_named_commands_compose(doc, tmp_path):
    from benchmarks.recipes import compose

    for line in _commands(doc):
        args = shlex.split(line)[1:]
        if not args or args[0] in ("--help", "--list", "--hydra-help"):
            continue
        overrides = [_first_value(a) for a in args if "=" in a and not a.startswith(("hydra", "-"))]
        try:
            compose([*overrides, f"out_dir={tmp_path}"])
        except Exception as err:  # noqa: BLE001  (any failure: the doc's command does not work)
            pytest.fail(f"{doc}: `{line}` does not compose: {type(err).__name__}: {err}")
