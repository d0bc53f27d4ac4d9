"""The run context: the one place settings become objects.

``load_context(home)`` reads the settings once (``RS_PIPELINE_CONFIG``, else
``<home>/rs_pipeline.yaml``, else the defaults), checks them together with the things they name
(task, annotator, files, folders) and reports every problem at once; it then hands out the
task, the annotator, the sampling parameters, the asset store and the checkpoint store. The
Dagster resources wrap it; the CLI, the notebook and the schedule use the same function.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from rs_pipeline.annotators import kinds_in_use, make_annotator
from rs_pipeline.chat import uses_template
from rs_pipeline.checkpoints import CheckpointStore
from rs_pipeline.config import PipelineConfig, config_from_dict, load_config
from rs_pipeline.errors import InputError
from rs_pipeline.gate import judge_setting_problems
from rs_pipeline.imports import lazy_module
from rs_pipeline.monitors import blocking_names
from rs_pipeline.resume import Resume, step_key
from rs_pipeline.storage import AssetStore
from rs_pipeline.tasks import Task, get_task, task_code_version
from rs_pipeline.waves import wave_problems

# the ML stack loads when a model is first needed, not with the settings (``imports.lazy_module``)
engines = lazy_module("rs_pipeline.engines")
generation = lazy_module("rs_pipeline.generation")
modeling = lazy_module("rs_pipeline.modeling")

CONFIG_FILE_NAME = "rs_pipeline.yaml"
CONFIG_ENV = "RS_PIPELINE_CONFIG"
#: Default storage base under the home (Dagster keeps its own compute logs in ``storage/``).
ASSETS_DIR = "assets"


def resolve_home(home: str | Path | None = None) -> Path:
    """``home``, else ``$DAGSTER_HOME``, else ``./dagster_home``."""
    home = home or os.environ.get("DAGSTER_HOME") or "dagster_home"
    return Path(home).resolve()


def config_path(home: Path, config_file: str | None = None) -> Path | None:
    """The settings file in force: ``config_file``, ``$RS_PIPELINE_CONFIG``, the home's copy."""
    path = config_file or os.environ.get(CONFIG_ENV)
    if path:
        return Path(path)
    home_file = home / CONFIG_FILE_NAME
    return home_file if home_file.exists() else None


@dataclass(frozen=True)
class RunContext:
    """Settings and everything derived from them, for one home."""

    settings: PipelineConfig
    home: Path

    @cached_property
    def task(self) -> Task:
        t = self.settings.task
        task = get_task(t.name, t.prompts_path)
        if hasattr(task, "quarantine"):
            task.quarantine = self.settings.inputs.quarantine
        return task

    @cached_property
    def task_code(self) -> dict[str, str]:
        """``{"task_code": version}`` for a plug-in task (its source outside the package is part
        of what identifies work, like the package's own code); empty for built-in tasks."""
        version = task_code_version(self.task)
        return {"task_code": version} if version else {}

    @cached_property
    def annotator(self):
        return make_annotator(self.settings.annotator, self.task, self.settings.seed,
                              self.settings.inputs.quarantine, inbox=str(self.home / "labelling"),
                              generation=self.settings.generation)

    @cached_property
    def sampling(self) -> generation.SamplingParams:
        g = self.settings.generation
        return generation.SamplingParams(
            n=g.n, temperature=g.temperature, top_k=g.top_k, top_p=g.top_p,
            max_new_tokens=g.max_new_tokens or self.task.max_completion_chars + 1)

    @cached_property
    def store(self) -> AssetStore:
        s = self.settings.storage
        return AssetStore(s.base_uri or str(self.home / ASSETS_DIR), s.endpoint_url)

    @cached_property
    def checkpoints(self) -> CheckpointStore:
        return CheckpointStore(self.store, self.home / "cache")

    @property
    def scratch(self) -> Path:
        """Local working space of long steps (trainer checkpoints); kept across crashes."""
        return self.home / "scratch"

    def resume(self, asset: str, partition: str | None, inputs: dict) -> Resume:
        """What lets step ``asset`` skip or continue work done for exactly these inputs."""
        r = self.settings.recovery
        return Resume(self.store, self.scratch, asset, partition,
                      step_key(self.settings, asset, partition, {**inputs, **self.task_code}),
                      shard_prompts=r.shard_prompts, checkpoint_steps=r.checkpoint_steps)

    def load_policy(self, record):
        """The policy (model, tokenizer) a checkpoint record points at."""
        return modeling.load_policy(self.checkpoints.local_dir(record.path),
                                    expected_id=record.id)

    def policy_is_chat(self) -> bool:
        """Whether the policy sees prompts through a chat template (your own folder with one,
        and ``policy.chat_template`` not ``off``; the demo's model has none)."""
        p = self.settings.policy
        return bool(p.base_path) and uses_template(modeling.load_tokenizer(p.base_path),
                                                   p.chat_template)

    def policy_engine(self, record):
        """The generation engine (``generation.engine``) holding the policy a checkpoint record
        points at; close it when done."""
        return engines.open_engine(self.settings.generation,
                                   self.checkpoints.local_dir(record.path), self.settings.seed,
                                   expected_id=record.id)

    def load_preference(self, record):
        """The preference model (model, tokenizer) a checkpoint record points at."""
        return modeling.load_preference(self.checkpoints.local_dir(record.path),
                                        expected_id=record.id)

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.settings.storage.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def mlflow_experiment(self) -> str:
        return self.settings.storage.mlflow_experiment


def check_settings(cfg: PipelineConfig) -> list[str]:
    """Problems between settings and the things they name (each one line), beyond what the
    typed config itself checks."""
    problems: list[str] = []
    task = None
    try:
        task = get_task(cfg.task.name, cfg.task.prompts_path)
    except InputError as exc:
        problems.append(str(exc))
    for name, path in (("task.prompts_path", cfg.task.prompts_path),
                       ("annotator.path", cfg.annotator.path),
                       ("preference.seed_labels_path", cfg.preference.seed_labels_path)):
        if path and not Path(path).is_file():
            problems.append(f"setting {name}: file {path} does not exist")
    for name, path in (("policy.base_path", cfg.policy.base_path),
                       ("preference.base_path", cfg.preference.base_path)):
        if path and not (Path(path) / "config.json").is_file():
            problems.append(f"setting {name}: {path} is not a Hugging Face model folder "
                            "(no config.json)")
    try:
        kinds = kinds_in_use(cfg.annotator.kind, cfg.annotator.mix)
    except InputError as exc:
        problems += str(exc).splitlines()
        kinds = []
    problems += _annotator_paths(cfg, kinds)
    verifier = task is not None and task.has_verifier
    if task is not None and not verifier:
        if "simulated" in kinds:
            problems.append(f"setting annotator.kind='simulated' needs a task with a verifier; "
                            f"task {task.name!r} has none: use annotator.kind='file'")
        if cfg.selection.selector != "preference":
            problems.append(f"setting selection.selector={cfg.selection.selector!r} needs a "
                            f"verifier; task {task.name!r} has none")
    if task is not None:
        problems += judge_setting_problems(cfg, task)
    if task is not None and not task.alphabet and not cfg.policy.base_path:
        problems.append(f"setting policy.base_path is required for task {task.name!r} (the "
                        "demo model is built only for the built-in tasks)")
    if cfg.generation.engine == "vllm" or (cfg.annotator.judge_engine == "vllm"
                                           and "judge" in kinds):
        try:
            engines.resolve_python(cfg.generation.vllm_python)
        except InputError as exc:
            problems.append(str(exc))
    problems += wave_problems(cfg.generation)
    problems += scale_problems(cfg.scale)
    try:
        blocking_names(cfg.monitors)
    except InputError as exc:
        problems.append(str(exc))
    if cfg.annotator.kind == "file" and not cfg.annotator.path:
        problems.append("setting annotator.path is required when annotator.kind is 'file'")
    if cfg.annotator.kind in ("file", "human") and not cfg.preference.seed_labels_path:
        problems.append("setting preference.seed_labels_path is required when annotator.kind is "
                        f"{cfg.annotator.kind!r} (a judgements file cannot label the synthetic "
                        "seed pairs)")
    return problems


def scale_problems(scale) -> list[str]:
    """What the ``scale`` settings need that is missing (one line each)."""
    problems = []
    if scale.executor == "dask" and importlib.util.find_spec("distributed") is None:
        problems.append("setting scale.executor='dask' needs dask.distributed: pip install "
                        "'rs_pipeline[scale]'")
    if scale.dask_address and scale.executor != "dask":
        problems.append(f"setting scale.dask_address is for scale.executor='dask' (it is "
                        f"{scale.executor!r})")
    return problems


def _annotator_paths(cfg: PipelineConfig, kinds: list[str]) -> list[str]:
    """The files and folders the annotator kinds in use need, present."""
    a, problems = cfg.annotator, []
    if cfg.annotator.kind == "mixed" and "file" in kinds and not a.path:
        problems.append("setting annotator.path is required when annotator.mix uses 'file'")
    for kind, name, path, folder in (
            ("reward_model", "annotator.reward_model_path", a.reward_model_path, True),
            ("judge", "annotator.judge_path", a.judge_path, True),
            ("judge", "annotator.judge_template", a.judge_template, False)):
        if kind not in kinds:
            continue
        if folder and not path:
            problems.append(f"setting {name} is required when the {kind!r} annotator is used")
        elif folder and not (Path(path) / "config.json").is_file():
            problems.append(f"setting {name}: {path} is not a Hugging Face model folder "
                            "(no config.json)")
        elif path and not folder and not Path(path).is_file():
            problems.append(f"setting {name}: file {path} does not exist")
    return problems


def load_settings(home: Path, config_file: str | None = None) -> PipelineConfig:
    path = config_path(home, config_file)
    return load_config(path) if path else config_from_dict({})


def load_context(home: str | Path | None = None, config_file: str | None = None) -> RunContext:
    """The run context for ``home``: built once per settings content, validated at load."""
    home = resolve_home(home)
    path = config_path(home, config_file)
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path and path.is_file() else ""
    return _load(home, str(path) if path else None, digest)


@lru_cache(maxsize=16)
def _load(home: Path, path: str | None, digest: str) -> RunContext:
    settings = load_config(path) if path else config_from_dict({})
    require_settings(settings, f"settings {path}" if path else "settings")
    return RunContext(settings, home)


def require_settings(settings: PipelineConfig, where: str = "settings") -> None:
    """Raise one ``InputError`` listing every ``check_settings`` problem (task name included)."""
    problems = check_settings(settings)
    if problems:
        raise InputError(f"{where}: " + problems[0] if len(problems) == 1 else
                         f"{where}: {len(problems)} problems:\n  " + "\n  ".join(problems))
