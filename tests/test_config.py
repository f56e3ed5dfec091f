"""Every config group option and every experiment preset composes; start-up validation names the valid values."""

from __future__ import annotations

import ast
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict

from culturespa.config import CONFIG_DIR, _dotted_keys, check_override_keys, compose, nearest_keys, validate_config
from culturespa.errors import CultureSPAError
from culturespa.models.loader import ModelSpec, resolve_model_dir
from culturespa.settings import GROUPS as SETTINGS_GROUPS
from culturespa.utils.plain import slug, to_plain
from culturespa.wvs.cultures import PAPER_CULTURES

REPO = Path(__file__).resolve().parents[1]
PRIMARY = ["train", "generate", "evaluate", "pipeline"]
GROUPS = sorted(
    p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name not in ("hydra", "experiment", "debug", "local")
)
OPTIONS = [
    (g, f.stem)
    for g in GROUPS
    for f in sorted((CONFIG_DIR / g).glob("*.yaml"))
    if f.stem != "default"
    or g in ("data", "engine", "templates", "questions", "filter", "answers", "sft", "eval", "paths")
]
EXPERIMENTS = sorted(f.stem for f in (CONFIG_DIR / "experiment").glob("*.yaml"))
DEBUGS = sorted(f.stem for f in (CONFIG_DIR / "debug").glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_group_option_composes(group: str, option: str, tmp_path: Path) -> None:
    cfg = compose("train", [f"{group}={option}"], output_dir=tmp_path)
    to_plain(cfg)  # every interpolation resolves
    validate_config(cfg)


@pytest.mark.parametrize("primary", PRIMARY)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_with_every_entry_point(primary: str, experiment: str, tmp_path: Path) -> None:
    cfg = compose(primary, [f"experiment={experiment}"], output_dir=tmp_path)
    to_plain(cfg)
    assert validate_config(cfg)


@pytest.mark.parametrize("debug", DEBUGS)
def test_debug_presets_compose(debug: str, tmp_path: Path) -> None:
    cfg = compose("train", [f"debug={debug}"], output_dir=tmp_path)
    to_plain(cfg)
    validate_config(cfg)


def test_culture_selection(tmp_path: Path) -> None:
    assert validate_config(compose("train", ["cultures=all"], output_dir=tmp_path)) == list(PAPER_CULTURES)
    assert validate_config(compose("train", ["cultures=[USA,CHN]"], output_dir=tmp_path)) == ["USA", "CHN"]
    assert validate_config(compose("train", ["cultures=[asia,MEX]"], output_dir=tmp_path)) == [
        "CHN",
        "RUS",
        "IND",
        "THA",
        "MEX",
    ]
    assert validate_config(compose("train", ["cultures=oceania"], output_dir=tmp_path)) == ["AUS", "NZL"]


def test_unknown_group_option_fails_at_compose(tmp_path: Path) -> None:
    with pytest.raises(MissingConfigException, match=r"(?s)mode/jiont.*joint.*specific"):
        compose("train", ["mode=jiont"], output_dir=tmp_path)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["mode=jiont"], "error: mode=jiont is not a valid option; valid mode options: joint, specific"),
        (["cultures=[USA,XYZ]"], "error: cultures=XYZ is not a valid option; valid cultures options: AUS,"),
        (["-m", "cultures=USA,XY"], "error: cultures=XY is not a valid option"),
        (["peft=qlra"], "error: peft=qlra is not a valid option; valid peft options: lora, qlora"),
    ],
)
def test_cli_rejects_unknown_group_option_in_one_line(args: list[str], expected: str) -> None:
    result = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.fraction=1.5", r"data.fraction=1.5 is out of range; valid: \(0.0, 1.0\]"),
        ("data.fraction=0", r"data.fraction=0 is out of range"),
        ("data.criterion=best", r"data.criterion='best' is not valid; choose one of: answer, majority, distr"),
        ("sft.micro_batch_size=3", r"global_batch_size=128 must be a multiple of sft.micro_batch_size=3"),
        ("decoding.mode=beam", r"decoding.mode='beam' is not valid; choose one of: sample, greedy, logprob"),
    ],
)
def test_validation_messages(override: str, message: str, tmp_path: Path) -> None:
    cfg = compose("train", [override], output_dir=tmp_path)
    with pytest.raises(CultureSPAError, match=message):
        validate_config(cfg)


def test_cfg_job_prints_all_18_cultures() -> None:
    out = subprocess.run(
        [sys.executable, "train.py", "--cfg", "job", "mode=joint", "cultures=all"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    cultures = OmegaConf.create(out).cultures
    assert list(cultures) == list(PAPER_CULTURES)


def test_run_dirs_are_named_from_overrides(tmp_path: Path) -> None:
    cfg = compose("train", ["mode=specific", "data.fraction=0.2"], output_dir=tmp_path)
    hydra_cfg = cfg.hydra
    assert "${cs_run_dir:}" in OmegaConf.to_container(hydra_cfg, resolve=False)["sweep"]["subdir"]
    assert Path(str(hydra_cfg.run.dir)).name.startswith("data.fraction-0.2+mode-specific-")
    assert slug("data.fraction=0.2,mode=specific") == "data.fraction-0.2+mode-specific"  # no = (issue 22)
    assert "/" not in slug("filter.input=/a/b/c")
    long = slug("x" * 500)
    assert len(long) <= 80 and long != slug("x" * 499)


def test_gpu_model_configs_are_complete(tmp_path: Path) -> None:
    for name in ("llama3_8b_instruct", "qwen2_5_7b_instruct", "mistral_7b_instruct"):
        cfg = compose("train", [f"model={name}"], output_dir=tmp_path)
        spec = ModelSpec.from_config(cfg.model)
        assert spec.source == "hf" and "/" in spec.path and spec.dtype == "auto"
        assert list(cfg.peft.target_modules) == [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]


def test_missing_model_path_is_one_line_error(tmp_path: Path) -> None:
    cfg = compose("train", ["model=llama3_8b_instruct", f"model.path={tmp_path}/nope/model"], output_dir=tmp_path)
    with pytest.raises(CultureSPAError, match=r"model.path: .*/nope/model: no such model folder"):
        resolve_model_dir(ModelSpec.from_config(cfg.model))


def test_wandb_names_come_from_overrides_even_without_the_hydra_node(tmp_path: Path) -> None:
    """Inside @hydra.main the task's cfg has no `hydra` node: names and groups must come from the running app."""
    from culturespa.utils.tracking import run_group, run_name, wandb_settings

    cfg = compose("train", ["mode=specific", "data.fraction=0.5"], output_dir=tmp_path)
    stripped = cfg.copy()
    with open_dict(stripped):
        stripped.pop("hydra")
    assert run_name(stripped) == run_name(cfg) == "train-data.fraction-0.5+mode-specific"  # spelled as run folders
    assert run_group(stripped) == run_name(cfg)
    settings = wandb_settings(stripped, "train")
    assert settings is not None and settings["job_type"] == "train" and settings["project"] == "culturespa"


def test_sweep_jobs_share_one_wandb_group_named_by_the_swept_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sweep folders carry no launch time any more, so the group cannot come from the folder name (every sweep of a
    task would share ``<task>-multirun``): it is named by the overridden keys, the same for every job of a sweep."""
    from culturespa.utils.tracking import GROUP_ENV, run_group

    monkeypatch.delenv(GROUP_ENV, raising=False)

    def job(*overrides: str) -> DictConfig:
        hydra = {"mode": "RunMode.MULTIRUN", "sweep": {"dir": "logs/train/multirun"}, "overrides": {"task": overrides}}
        return OmegaConf.create({"task_name": "train", "hydra": hydra, "logger": {}})

    first, second = job("data.fraction=0.2", "mode=joint"), job("mode=joint", "data.fraction=0.4")
    assert run_group(first) == run_group(second) == "train-sweep-data.fraction+mode"
    assert run_group(job("sft.lr=1e-4")) != run_group(first)
    named = job("data.fraction=0.2")
    named.logger = {"wandb": {"group": "quantity-study"}}
    assert run_group(named) == "quantity-study"


# ---- hints name real keys; bad keys and values say what is valid ---------------------------------------------------
HINT_GROUPS = "|".join(sorted(GROUPS + ["pipeline", "export", "callbacks"]))
HINT_KEY = re.compile(rf"(?<![\w./-])(?:{HINT_GROUPS})\.[a-z_]+(?:\.[a-z_]+)*(?![\w/(])")
MESSAGE_CALLS = {"CultureSPAError", "fail", "warning", "warn", "error", "append", "print", "info"}
SET_WITH_PLUS = {"pipeline.root"}  # optional keys the docs add with +pipeline.root=DIR


def _message_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """The string parts of every raised error and of every warning, log, print or error-list call."""
    found = []
    for node in ast.walk(tree):
        call = node.exc if isinstance(node, ast.Raise) else node
        if call is None:  # a bare `raise`
            continue
        name = getattr(getattr(call, "func", None), "attr", None) or getattr(getattr(call, "func", None), "id", "")
        if isinstance(node, ast.Raise) or (isinstance(node, ast.Call) and name in MESSAGE_CALLS):
            found += [
                (n.lineno, n.value) for n in ast.walk(call) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            ]
    return found


def _hint_keys() -> dict[str, str]:
    keys: dict[str, str] = {}
    for path in sorted((REPO / "culturespa").rglob("*.py")):
        for line, text in _message_strings(ast.parse(path.read_text())):
            for key in HINT_KEY.findall(text):
                keys.setdefault(key, f"{path.relative_to(REPO)}:{line}")
    return keys


def test_every_key_a_message_names_is_a_real_config_key(tmp_path: Path) -> None:
    """An error once said to set data.wvs_dir (the key is paths.wvs_dir), which Hydra then refused."""
    known: set[str] = set(SET_WITH_PLUS)
    for primary in PRIMARY:
        for extra in ([], ["model=tiny_random", "trainer=fsdp", "filter=strict", "peft=qlora", "prompt=p2"]):
            cfg = compose(primary, extra, output_dir=tmp_path)
            known |= set(_dotted_keys(OmegaConf.to_container(cfg, resolve=False)))
    # keys the typed settings accept though a preset may leave them out (decoding.top_k, decoding.seed_step ...)
    known |= {f"{cls.group}.{f.name}" for cls in SETTINGS_GROUPS for f in dataclasses.fields(cls)}
    keys = _hint_keys()
    assert "sft.pairs_dir" in keys and "model.path" in keys  # the walk finds the hints
    wrong = {key: where for key, where in keys.items() if key not in known}
    assert not wrong, f"messages name keys the config does not have: {wrong}"


def test_nearest_keys_suggests_siblings_first() -> None:
    known = {"sft", "sft.lr", "sft.warmup_ratio", "sft.epochs", "decoding.top_p", "decoding.top_k", "peft.r"}
    assert nearest_keys("sft.learning_rate", known)[0] == "sft.lr"  # initials
    assert nearest_keys("decoding.topp", known)[0] == "decoding.top_p"
    assert nearest_keys("sfft.lr", known)[0] == "sft.lr"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["sft.learning_rate=1e-4"], "error: sft.learning_rate is not a config key; nearest valid keys: sft.lr, "),
        (
            ["-m", "decoding.topp=0.5,0.9"],
            "error: decoding.topp is not a config key; nearest valid keys: decoding.top_p",
        ),
        (["sft.lr=abc"], "error: sft.lr='abc' is not a number; valid: (0.0, 1.0]"),
    ],
)
def test_cli_names_bad_keys_and_values_in_one_line(args: list[str], expected: str) -> None:
    result = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr[-2000:]


def test_added_keys_pass_the_unknown_key_check(tmp_path: Path) -> None:
    check_override_keys(["+sft.note=x", "sft.lr=2e-4", "experiment=smoke", "questions.per_topic=3"], "train")
    check_override_keys(["pipeline.answer_shards=2", "cultures=[USA,CHN]"], "pipeline")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("sft.lr=abc", r"^sft.lr='abc' is not a number; valid: \(0.0, 1.0\]$"),
        ("sft.micro_batch_size=two", r"sft.micro_batch_size='two' must be a positive integer"),
        ("++decoding.top_k=-1", r"decoding.top_k=-1 must be a non-negative integer"),
        ("++questions.top_k=1.5", r"questions.top_k=1.5 must be a non-negative integer"),
        ("++sft.checkpoint_minutes=0", r"sft.checkpoint_minutes=0 must be a number > 0"),
        ("model.dtype=fp8", r"model.dtype='fp8' is not valid; choose one of: float32, bfloat16, float16, auto"),
    ],
)
def test_typed_settings_reject_bad_values(override: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(CultureSPAError, match=message):
        validate_config(compose("train", [override], output_dir=tmp_path))


def test_model_loader_checks_through_the_same_rules(tmp_path: Path) -> None:
    cfg = compose("train", ["model.source=s3"], output_dir=tmp_path)
    with pytest.raises(CultureSPAError, match=r"^model.source='s3' is not valid; choose one of: hf, gguf_wheel"):
        ModelSpec.from_config(cfg.model)
