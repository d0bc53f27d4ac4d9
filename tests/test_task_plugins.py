"""Tasks written outside the package: by import path and by entry point, from the README's own
example, through the CLI, the Dagster definitions and the nightly schedule; and every way a
name can fail is one error naming ``task.name``."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from rs_pipeline.cli import main
from rs_pipeline.config import config_from_dict, merge
from rs_pipeline.context import check_settings, load_context
from rs_pipeline.errors import InputError
from rs_pipeline.tasks import ENTRY_POINT_GROUP, Task, get_task, known_tasks
from tests.conftest import PROMOTE_ALL, make_home

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def readme_block(first_line: str) -> str:
    """The README's fenced block whose first line is ``first_line``."""
    for block in re.findall(r"```[a-z]*\n(.*?)```", README.read_text(), re.S):
        if block.splitlines()[0] == first_line:
            return block
    raise AssertionError(f"README has no block starting {first_line!r}")


def install_readme_plugin(site: Path) -> Path:
    """The README's sort6 distribution, built from its own pyproject and installed into
    ``site`` by pip (offline: no index, no build isolation), entry point included."""
    src = site.parent / "src" / "sort6-tasks"
    (src / "sort6_tasks").mkdir(parents=True)
    (src / "sort6_tasks" / "__init__.py").write_text(
        readme_block("# sort6-tasks/sort6_tasks/__init__.py"))
    (src / "pyproject.toml").write_text(readme_block("# sort6-tasks/pyproject.toml"))
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                          "--no-build-isolation", "--disable-pip-version-check", "--target",
                          str(site), str(src)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    shutil.rmtree(src.parent)  # only the installed copy remains importable
    return site


@pytest.fixture(scope="module")
def installed_site(tmp_path_factory):
    return install_readme_plugin(tmp_path_factory.mktemp("plugin") / "site")


@pytest.fixture
def plugin_site(installed_site, tmp_path, monkeypatch):
    """A private copy of the installed plug-in on ``sys.path`` (tests may add or edit files)."""
    site = Path(shutil.copytree(installed_site, tmp_path / "site"))
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in [m for m in sys.modules if m.startswith(("sort6_tasks", "broken_tasks"))]:
        del sys.modules[name]


def test_readme_task_resolves_by_entry_point_and_by_import_path(plugin_site):
    by_name, by_path = get_task("sort6"), get_task("sort6_tasks:Sort6")
    assert type(by_name) is type(by_path) and isinstance(by_name, Task)
    assert type(by_name).__module__ == "sort6_tasks"
    assert "sort6" in known_tasks()
    t = by_name
    assert len(t.prompts()) == 4**6 and t.prompts()[1] == "aaaaab="
    assert t.answer("dbcaab=") == "aabbcd" and t.bugged_answer("dbcaab=") == "aabbdc"
    assert t.verify("dbcaab=", "aabbcd") == 1.0 and t.verify("dbcaab=", "aabbdc") == 0.0
    pairs = t.seed_pairs(t.prompts(), 50, seed=0)
    assert all(len(p) == 7 and len(a) == len(b) == 6 for p, a, b in pairs)
    assert sum(t.answer(p) in (a, b) for p, a, b in pairs) > 25


def _write_module(site: Path, name: str, code: str) -> None:
    (site / f"{name}.py").write_text(code)


BROKEN = '''
from rs_pipeline.tasks import Task

class NotATask:
    pass

class Abstract(Task):
    pass

def make_list():
    return []

def make_sort6():
    from sort6_tasks import Sort6
    return Sort6()

count = 3
'''


@pytest.mark.parametrize("name, message", [
    ("nosuchpkg.tasks:Sort6", "cannot import module 'nosuchpkg.tasks' for task "
     "'nosuchpkg.tasks:Sort6' (ModuleNotFoundError: No module named 'nosuchpkg'); install its "
     "distribution or put its folder on PYTHONPATH"),
    ("broken_tasks:Missing", "module 'broken_tasks' has no attribute 'Missing'"),
    ("broken_tasks:NotATask", "is the class NotATask, which is not a subclass of "
     "rs_pipeline.tasks.Task"),
    ("broken_tasks:Abstract", "creating task 'broken_tasks:Abstract' failed (TypeError: Can't "
     "instantiate abstract class Abstract"),
    ("broken_tasks:make_list", "returned an object of type 'list', not an rs_pipeline.tasks.Task"),
    ("broken_tasks:count", "is of type 'int', not a Task subclass or a factory"),
    ("broken_tasks:", "is not an import path 'package.module:TaskClass'"),
    ("syntax_error:Task", "importing module 'syntax_error' for task 'syntax_error:Task' failed "
     "(SyntaxError"),
    ("brokenep", "task 'brokenep' (entry point 'gone_module:Task' in group 'rs_pipeline.tasks') "
     "does not load (ModuleNotFoundError: No module named 'gone_module')"),
    ("chess", "unknown task 'chess' (known: rev8, addition, prompts_file, brokenep, sort6; or an "
     "import path"),
])
def test_every_way_a_name_fails_is_one_error_naming_the_setting(plugin_site, name, message):
    _write_module(plugin_site, "broken_tasks", BROKEN)
    _write_module(plugin_site, "syntax_error", "def (:\n")
    dist = plugin_site / "broken_ep-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-ep\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nbrokenep = gone_module:Task\n")
    with pytest.raises(InputError) as err:
        get_task(name)
    assert str(err.value).startswith("setting task.name: ") and message in str(err.value)
    assert get_task("broken_tasks:make_sort6").name == "sort6"  # a factory works
    # the same error comes out of the settings check, the home's context and the CLI
    cfg = config_from_dict({"task": {"name": name}})
    assert [p for p in check_settings(cfg) if message in p]


def test_a_bad_task_name_stops_every_command_before_any_work(plugin_site, tmp_path,
                                                             monkeypatch, capsys):
    home = make_home(tmp_path / "home", monkeypatch,
                     merge(PROMOTE_ALL, {"task": {"name": "sort6_tasks:Sort7"}}))
    with pytest.raises(InputError, match="setting task.name: module 'sort6_tasks' has no "
                                         "attribute 'Sort7'"):
        load_context(home)
    for argv in (["round"], ["status"], ["lineage", "policy", "r0001"]):
        assert main([*argv, "--home", str(home)]) == 2, argv
        assert "setting task.name: module 'sort6_tasks' has no attribute 'Sort7'" in (
            capsys.readouterr().err)
    fresh = tmp_path / "fresh"
    assert main(["demo", "--task", "nosuch:Task", "--home", str(fresh)]) == 2
    assert "setting task.name: cannot import module 'nosuch'" in capsys.readouterr().err
    assert not (fresh / "rs_pipeline.yaml").exists()  # the bad settings were not written
    assert not list(fresh.rglob("*.parquet"))


def _cli(args, env, timeout=900):
    return subprocess.run([sys.executable, "-m", "rs_pipeline.cli", *args], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_readme_plugin_runs_bootstrap_and_a_round_everywhere(plugin_site, tmp_path, monkeypatch):
    """The README's sort6 task named by its entry point: bootstrap and a round from the CLI
    (a fresh process that finds the task only through the installed entry point), then status,
    lineage, the Dagster definitions and the nightly schedule's tick on the same home."""
    settings = merge(yaml.safe_load(readme_block("# sort6.yaml")), {
        k: v for k, v in PROMOTE_ALL.items() if k != "task"})
    settings = merge(settings, {"task": {k: v for k, v in PROMOTE_ALL["task"].items()
                                         if k != "name"}})
    assert settings["task"]["name"] == "sort6"
    cfg = tmp_path / "sort6.yaml"
    cfg.write_text(yaml.safe_dump(settings))
    home = tmp_path / "home"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_site), str(ROOT)]),
           "DAGSTER_HOME": str(home), "OMP_NUM_THREADS": "1"}
    env.pop("RS_PIPELINE_CONFIG", None)
    run = _cli(["demo", "--config", str(cfg), "--home", str(home), "--rounds", "1"], env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "r0001" in run.stdout and "promoted" in run.stdout.lower()
    status = _cli(["status", "--home", str(home)], env, timeout=300)
    assert status.returncode == 0 and re.search(r"r0001\s+promoted", status.stdout), status
    lineage = _cli(["lineage", "policy", "r0001", "--home", str(home)], env, timeout=300)
    assert lineage.returncode == 0, lineage.stderr[-2000:]

    task = get_task("sort6")
    assets = home / "assets"
    for key in ("r0001",):
        gens = pq.read_table(assets / "generations" / f"{key}.parquet").to_pydict()
        assert set(gens["prompt"]) <= set(task.prompts())
        assert all(set(c) <= set(task.alphabet) for c in gens["completion"])
        sft = pq.read_table(assets / "sft_dataset" / f"{key}.parquet").to_pydict()
        verified = [task.verify(p, c) for p, c in zip(sft["prompt"], sft["completion"])]
        assert verified == sft["verifier_score"]  # scored by the plug-in's own verifier
    # the Dagster definitions (what `dagster dev` / `rs-pipeline ui` load) and the schedule's
    # tick resolve the same task from the home's settings
    import dagster as dg

    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.delenv("RS_PIPELINE_CONFIG", raising=False)
    from rs_pipeline.defs import defs
    from rs_pipeline.defs.nightly import tick
    from rs_pipeline.defs.resources import PipelineResource

    ctx = PipelineResource().ctx
    assert type(ctx.task).__module__ == "sort6_tasks" and ctx.settings.task.name == "sort6"
    assert defs.resolve_job_def("round") is not None
    request = tick(dg.DagsterInstance.get(), ctx)
    assert isinstance(request, dg.RunRequest) and request.partition_key == "r0002"


def test_editing_a_plugin_task_is_new_work_not_reused_results(plugin_site, tmp_path, monkeypatch):
    from rs_pipeline.resume import step_key
    from rs_pipeline.tasks import task_code_version

    assert task_code_version(get_task("rev8")) == ""  # the package's code is versioned whole
    home = make_home(tmp_path / "home", monkeypatch,
                     merge(PROMOTE_ALL, {"task": {"name": "sort6"}}))
    ctx = load_context(home)
    before = task_code_version(ctx.task)
    assert len(before) == 16 and ctx.task_code == {"task_code": before}
    key = ctx.resume("scores", "r0001", {"generations": "v1"}).key
    assert key == step_key(ctx.settings, "scores", "r0001",
                           {"generations": "v1", "task_code": before})
    source = plugin_site / "sort6_tasks" / "__init__.py"
    source.write_text(source.read_text().replace("a[:4] + a[5] + a[4]", "a[::-1]"))
    assert task_code_version(ctx.task) not in ("", before)
