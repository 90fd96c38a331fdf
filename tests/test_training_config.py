"""The training configuration: the argument groups (model, data, training) and the flat :class:`TrainingConfig` they
compose, the one command line generated from them, the key lists derived from their metadata, the one comparison of
run identities, and objects given to one run (``extra_datasets`` / ``extra_filters``) that leave the shared
registries alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging

import numpy as np
import pytest

from masterkey.errors import TrainingConfigError
from masterkey.training import (
    BUILTIN_DATASETS,
    NAMED_FILTERS,
    BuiltinDataset,
    ResolvedFilters,
    TrainingConfig,
    build_parser,
    load_image_dataset,
    make_config,
    parse_args,
    resolve_filters,
    run_identity,
    train_transfer,
)
from masterkey.training.config import (
    ARGUMENT_GROUPS,
    CARD_KEYS,
    RUN_IDENTITY_KEYS,
    DataArguments,
    ModelArguments,
    TrainingArguments,
    option,
    parse_args_into_groups,
)

#: The command line as it was written by hand before it was generated, and the options added since: names, in order.
OPTIONS = (
    "model", "pretrained", "filters", "trainable", "no_freeze", "no_strict", "mapping", "model_kwargs",
    "compare_with_scratch", "dataset_name", "dataset_config_name", "train_dir", "validation_dir", "image_column_name",
    "label_column_name", "train_val_split", "validation_from_train", "max_train_samples", "max_eval_samples",
    "resolution", "crop_scale", "dataloader_num_workers",
    "per_device_train_batch_size", "per_device_eval_batch_size", "learning_rate", "weight_decay", "num_train_epochs",
    "max_train_steps", "gradient_accumulation_steps", "lr_scheduler_type", "num_warmup_steps", "seed", "cpu_threads",
    "channels_last", "transposed_depthwise_backward", "reuse_freed_memory", "flush_denormal", "torch_compile",
    "output_dir",
    "overwrite_output_dir", "checkpointing_steps", "checkpoints_total_limit", "resume_from_checkpoint",
    "with_tracking", "report_to", "push_to_hub", "hub_model_id", "hub_token", "log_sample_ids",
    "disable_tqdm",
)  # fmt: skip
#: What run_config.json files written before the dataclass hold, in this order: old folders must still match.
OLD_IDENTITY_KEYS = (
    "model", "filters", "trainable", "no_freeze", "no_strict", "mapping", "dataset_name", "dataset_config_name",
    "train_dir", "validation_dir", "image_column_name", "label_column_name", "train_val_split", "max_train_samples",
    "max_eval_samples", "resolution", "crop_scale", "per_device_train_batch_size", "learning_rate", "weight_decay",
    "num_train_epochs", "max_train_steps", "gradient_accumulation_steps", "lr_scheduler_type", "num_warmup_steps",
    "seed",
)  # fmt: skip
OLD_CARD_KEYS = (
    "model", "filters", "trainable", "mapping", "dataset_name", "train_dir", "resolution", "crop_scale",
    "per_device_train_batch_size", "learning_rate", "weight_decay", "num_train_epochs", "max_train_steps",
    "gradient_accumulation_steps", "lr_scheduler_type", "num_warmup_steps", "seed",
)  # fmt: skip


# -- the command line ------------------------------------------------------------------------------------------------
def test_the_parser_is_generated_from_the_fields():
    parser = build_parser()
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert tuple(actions) == OPTIONS == tuple(f.name for f in dataclasses.fields(TrainingConfig))
    groups = {a.dest: g.title for g in parser._action_groups for a in g._group_actions}
    for title, group in ARGUMENT_GROUPS.items():
        for f in dataclasses.fields(group):
            action = actions[f.name]
            assert action.option_strings == [f"--no_{f.name}" if f.default is True else f"--{f.name}",
                                             *f.metadata["aliases"]]  # fmt: skip
            assert action.default == f.default and action.help == f.metadata["help"] and action.help
            assert groups[f.name] == title
    assert [g.title for g in parser._action_groups[2:]] == ["model", "data", "training"]
    assert isinstance(actions["no_freeze"], argparse._StoreTrueAction)
    assert actions["crop_scale"].nargs == 2 and actions["crop_scale"].metavar == ("MIN", "MAX")
    assert actions["lr_scheduler_type"].choices and actions["trainable"].choices and actions["mapping"].choices
    assert parser.prog == "transfer.py"
    args = parser.parse_args(["--crop_scale", "0.5", "1", "--learning_rate", "2e-3", "--resolution", "32"])
    assert args.crop_scale == [0.5, 1.0] and args.learning_rate == 0.002 and args.resolution == 32
    assert parser.parse_args(["--checkpointing_steps", "epoch"]).checkpointing_steps == "epoch"
    with pytest.raises(SystemExit):
        parser.parse_args(["--resolution", "0"])  # a positive-integer field, checked by the parser too



# -- the argument groups ---------------------------------------------------------------------------------------------
#: A command line with options from every group, and the flat configuration it gave before the groups existed (the
#: JSON of TrainingConfig.to_dict(), as results.json holds it), key for key and in this order.
EVERY_GROUP_ARGV = (
    "--model", "convnext_atto", "--pretrained", "--filters", "own", "--trainable", "pointwise+head", "--no_freeze",
    "--mapping", "depth", "--model_kwargs", '{"drop_path_rate": 0.1}', "--compare_with_scratch",
    "--dataset_name", "digits", "--image_column_name", "img", "--train_val_split", "0.2", "--validation_from_train",
    "--max_train_samples", "100", "--resolution", "48", "--crop_scale", "0.25", "1", "--dataloader_num_workers", "0",
    "--per_device_train_batch_size", "16", "--learning_rate", "0.01", "--num_train_epochs", "2",
    "--lr_scheduler_type", "linear", "--seed", "7", "--no_channels_last", "--torch_compile",
    "--output_dir", "out", "--checkpointing_steps", "epoch", "--checkpoints_total_limit", "2",
    "--resume_from_checkpoint", "latest", "--with_tracking", "--log_sample_ids",
)  # fmt: skip
EVERY_GROUP_JSON = (
    '{"model": "convnext_atto", "pretrained": true, "filters": "own", "trainable": "pointwise+head", '
    '"no_freeze": true, "no_strict": false, "mapping": "depth", "model_kwargs": {"drop_path_rate": 0.1}, '
    '"compare_with_scratch": true, "dataset_name": "digits", "dataset_config_name": null, "train_dir": null, '
    '"validation_dir": null, "image_column_name": "img", "label_column_name": null, "train_val_split": 0.2, '
    '"validation_from_train": true, "max_train_samples": 100, "max_eval_samples": null, "resolution": 48, '
    '"crop_scale": [0.25, 1.0], "dataloader_num_workers": 0, "per_device_train_batch_size": 16, '
    '"per_device_eval_batch_size": 128, "learning_rate": 0.01, "weight_decay": 0.01, "num_train_epochs": 2, '
    '"max_train_steps": null, "gradient_accumulation_steps": 1, "lr_scheduler_type": "linear", '
    '"num_warmup_steps": 50, "seed": 7, "cpu_threads": null, "channels_last": false, '
    '"transposed_depthwise_backward": true, "reuse_freed_memory": true, "flush_denormal": true, "torch_compile": true, '
    '"output_dir": "out", '
    '"overwrite_output_dir": false, "checkpointing_steps": "epoch", "checkpoints_total_limit": 2, '
    '"resume_from_checkpoint": "latest", "with_tracking": true, "report_to": "tensorboard", "push_to_hub": false, '
    '"hub_model_id": null, "hub_token": null, "log_sample_ids": true, "disable_tqdm": false}'
)


def test_the_groups_partition_the_fields_in_the_flat_order():
    assert list(ARGUMENT_GROUPS) == ["model", "data", "training"]
    assert tuple(ARGUMENT_GROUPS.values()) == (ModelArguments, DataArguments, TrainingArguments)
    names = [f.name for group in ARGUMENT_GROUPS.values() for f in dataclasses.fields(group)]
    assert len(names) == len(set(names))  # no field in two groups
    assert tuple(names) == OPTIONS == tuple(f.name for f in dataclasses.fields(TrainingConfig))  # none lost, same order
    flat = {f.name: f for f in dataclasses.fields(TrainingConfig)}
    for group in ARGUMENT_GROUPS.values():
        assert issubclass(TrainingConfig, group)
        for f in dataclasses.fields(group):  # the flat field is the group's, metadata and all
            assert (flat[f.name].default, flat[f.name].metadata) == (f.default, f.metadata)
    def names(group):
        return {f.name for f in dataclasses.fields(group)}

    assert {"model", "pretrained", "filters", "mapping", "trainable", "model_kwargs"} <= names(ModelArguments)
    assert {"dataset_name", "train_dir", "validation_dir", "resolution", "max_train_samples"} <= names(DataArguments)
    assert {"learning_rate", "num_train_epochs", "seed", "output_dir", "push_to_hub"} <= names(TrainingArguments)


def test_the_help_lists_the_options_by_group(capsys):
    with pytest.raises(SystemExit) as caught:
        build_parser().parse_args(["--help"])
    assert caught.value.code == 0
    text = capsys.readouterr().out
    headings = [text.index(f"\n{title}:\n") for title in ARGUMENT_GROUPS]
    assert headings == sorted(headings)  # model, data, training, in that order
    sections = dict(zip(ARGUMENT_GROUPS, [text[a:b] for a, b in zip(headings, [*headings[1:], len(text)])]))
    for title, group in ARGUMENT_GROUPS.items():
        assert group.__name__ in sections[title]  # the description names the dataclass
        for f in dataclasses.fields(group):
            flag = f"--no_{f.name}" if f.default is True else f"--{f.name}"
            others = [s for t, s in sections.items() if t != title]
            assert f"  {flag} " in sections[title] or f"  {flag}\n" in sections[title], flag
            assert not any(f"  {flag} " in s or f"  {flag}\n" in s for s in others), flag


def test_a_command_line_from_every_group_gives_the_flat_config_it_gave_before():
    config = parse_args(list(EVERY_GROUP_ARGV))
    assert json.dumps(config.to_dict()) == EVERY_GROUP_JSON  # the shape of results.json, byte for byte
    assert tuple(run_identity(config)) == RUN_IDENTITY_KEYS
    model_args, data_args, training_args = groups = parse_args_into_groups(list(EVERY_GROUP_ARGV))
    assert tuple(map(type, groups)) == (ModelArguments, DataArguments, TrainingArguments)
    assert (model_args.model_kwargs, data_args.crop_scale, training_args.checkpointing_steps) == (
        {"drop_path_rate": 0.1}, [0.25, 1.0], "epoch")  # fmt: skip
    assert {**dataclasses.asdict(model_args), **dataclasses.asdict(data_args), **dataclasses.asdict(training_args)} == (
        config.to_dict())  # fmt: skip
    assert TrainingConfig.from_groups(*groups) == config == TrainingConfig.from_groups(*reversed(groups))
    assert make_config(**json.loads(EVERY_GROUP_JSON)) == config  # train_transfer(**options)'s flat keywords
    data_args.crop_scale.append(9.0)  # the groups are copies
    assert config.crop_scale == [0.25, 1.0]
    with pytest.raises(TrainingConfigError, match="one each of ModelArguments, DataArguments, TrainingArguments"):
        TrainingConfig.from_groups(model_args, data_args)
    with pytest.raises(TrainingConfigError, match="got TrainingConfig"):
        TrainingConfig.from_groups(config)
    with pytest.raises(TrainingConfigError, match="not both"):  # checked as a whole run
        TrainingConfig.from_groups(ModelArguments(), DataArguments(dataset_name="digits", train_dir="x"),
                                   TrainingArguments())  # fmt: skip


def test_aliases_answer_for_their_option():
    parser = build_parser()
    assert parser.parse_args(["--model_name_or_path", "convnext_atto"]).model == "convnext_atto"  # transformers' name
    assert parse_args(["--model_name_or_path", "convnext_atto"]) == parse_args(["--model", "convnext_atto"])
    assert "model_name_or_path" not in vars(parser.parse_args([]))  # an alias, not a field
    with pytest.warns(DeprecationWarning, match="group"):
        option(1, "old style", group="optimisation")

def test_key_lists_come_from_the_fields_and_match_the_runs_already_on_disk():
    from masterkey.training.outputs import same_run

    # keys added since (pretrained after model, model_kwargs after mapping, validation_from_train after
    # train_val_split); a folder without them is a run of their defaults
    mapping, split = OLD_IDENTITY_KEYS.index("mapping") + 1, OLD_IDENTITY_KEYS.index("train_val_split") + 1
    assert RUN_IDENTITY_KEYS == (OLD_IDENTITY_KEYS[0], "pretrained", *OLD_IDENTITY_KEYS[1:mapping], "model_kwargs",
                                 *OLD_IDENTITY_KEYS[mapping:split], "validation_from_train",
                                 *OLD_IDENTITY_KEYS[split:])  # fmt: skip
    card_mapping = OLD_CARD_KEYS.index("mapping") + 1
    assert CARD_KEYS == (OLD_CARD_KEYS[0], "pretrained", *OLD_CARD_KEYS[1:card_mapping], "model_kwargs",
                         *OLD_CARD_KEYS[card_mapping:])  # fmt: skip
    old_defaults = {"learning_rate": 1e-3, "num_train_epochs": 3, "lr_scheduler_type": "linear", "num_warmup_steps": 0}
    config = make_config(dataset_name="digits", crop_scale=(0.5, 1.0), seed=3, **old_defaults)
    identity = run_identity(config)
    assert tuple(identity) == RUN_IDENTITY_KEYS and identity["pretrained"] is identity["validation_from_train"] is False
    assert identity["model_kwargs"] is None
    old = {k: v for k, v in identity.items() if k not in ("pretrained", "validation_from_train", "model_kwargs")}
    # the JSON a run_config.json written before this change holds for the same options: still the same run
    assert same_run(json.loads(json.dumps(old)), identity) and not same_run({**old, "pretrained": True}, identity)
    assert not same_run({**old, "validation_from_train": True}, identity)
    assert not same_run({**old, "model_kwargs": {"drop_path_rate": 0.1}}, identity)
    assert json.dumps(old) == json.dumps({
        "model": "tf_efficientnet_lite0", "filters": "imagenet-lite0", "trainable": "all-but-depthwise",
        "no_freeze": False, "no_strict": False, "mapping": "exact", "dataset_name": "digits",
        "dataset_config_name": None, "train_dir": None, "validation_dir": None, "image_column_name": None,
        "label_column_name": None, "train_val_split": 0.15, "max_train_samples": None, "max_eval_samples": None,
        "resolution": None, "crop_scale": [0.5, 1.0], "per_device_train_batch_size": 64, "learning_rate": 0.001,
        "weight_decay": 0.01, "num_train_epochs": 3, "max_train_steps": None, "gradient_accumulation_steps": 1,
        "lr_scheduler_type": "linear", "num_warmup_steps": 0, "seed": 3,
    })  # fmt: skip


def test_model_kwargs_are_a_checked_json_object_for_create_model():
    config = parse_args(["--model", "convnext_atto", "--model_kwargs", '{"ls_init_value": 1.0}'])
    assert config.model_kwargs == {"ls_init_value": 1.0}
    assert run_identity(config)["model_kwargs"] == {"ls_init_value": 1.0}
    for bad in ('{"ls_init_value": 1.0', '[1, 2]'):  # not JSON; JSON but not an object
        with pytest.raises(SystemExit):
            build_parser().parse_args(["--model_kwargs", bad])
    with pytest.raises(TrainingConfigError, match="num_classes.*the run sets them"):
        make_config(model_kwargs={"num_classes": 3})
    with pytest.raises(TrainingConfigError, match="JSON values"):
        make_config(model_kwargs={"act_layer": object()})
    with pytest.raises(TrainingConfigError, match="argument names"):
        make_config(model_kwargs={"not a name": 1})
    # as JSON reads it back
    assert make_config(model_kwargs={"depths": (1, 1, 1, 1)}).model_kwargs == {"depths": [1, 1, 1, 1]}


def test_configs_are_typed_validated_and_plain_json():
    config = parse_args(["--dataset_name", "digits", "--checkpointing_steps", "5"])
    assert isinstance(config, TrainingConfig) and config.checkpointing_steps == 5
    assert config.crop_scale == [0.5, 1.0]  # a list, as JSON reads it back
    assert json.loads(json.dumps(config.to_dict())) == config.to_dict()
    assert list(config.to_dict()) == list(OPTIONS)
    assert make_config(dataset_name="digits", checkpointing_steps=5) == config
    with pytest.raises(TrainingConfigError, match=r"Unknown training options \['nope'\]"):
        make_config(nope=1)
    with pytest.raises(TrainingConfigError, match="pointwise\\+head"):  # the injectors' own policy check
        make_config(trainable="some")
    with pytest.raises(TrainingConfigError, match="max_train_samples must be a positive integer"):
        TrainingConfig(max_train_samples=0).validate()


def test_train_transfer_takes_a_config_or_keyword_options(monkeypatch):
    from masterkey.training import run

    seen = []
    monkeypatch.setattr(run, "_train", lambda config, output_dir, extras: seen.append((config, extras)) or {})
    config = TrainingConfig(dataset_name="digits", output_dir="out")
    train_transfer(config, seed=7)
    train_transfer(config)
    train_transfer(dataset_name="digits", output_dir="out", extra_filters={"mine": print})
    (first, _), (second, _), (third, extras) = seen
    assert first.seed == 7 and second.seed == 42 and third == second
    assert second is not config and config.crop_scale == (0.5, 1.0)  # the caller's config is left as it was
    assert extras.filters == {"mine": print} and extras.datasets == {}
    with pytest.raises(TrainingConfigError, match="TrainingConfig"):
        train_transfer(argparse.Namespace(**config.to_dict()))


# -- one comparison of run identities --------------------------------------------------------------------------------
def test_folders_and_checkpoints_compare_identities_as_json(tmp_path):
    """A tuple in memory is the list JSON reads back: finished_run, check_output_dir and find_checkpoint agree."""
    from masterkey.training.outputs import (
        STATE_NAME,
        check_output_dir,
        claim_output_dir,
        find_checkpoint,
        finished_run,
        same_run,
        write_json,
    )

    identity = {**run_identity(make_config(dataset_name="digits")), "num_processes": 1}
    as_tuple = {**identity, "crop_scale": (0.5, 1.0)}
    claim_output_dir(tmp_path, identity, clear=False)
    assert same_run(json.loads((tmp_path / "run_config.json").read_text()), as_tuple)
    assert not same_run({**identity, "seed": 1}, as_tuple) and not same_run(None, as_tuple)
    assert same_run({**identity, "num_processes": 2}, as_tuple, ignore=("num_processes",))
    # an unfinished run of the same configuration: 'latest' starts it over
    assert check_output_dir(tmp_path, as_tuple, overwrite=False, resume="latest", checkpoint=None)
    write_json(tmp_path / "results.json", {"final": {"accuracy": 0.5}})
    assert finished_run(tmp_path, {**as_tuple, "num_processes": 4}) == {"final": {"accuracy": 0.5}}
    assert finished_run(tmp_path, {**as_tuple, "seed": 1}) is None
    checkpoint = tmp_path / "checkpoints" / "step_2"
    checkpoint.mkdir(parents=True)
    write_json(checkpoint / STATE_NAME, {"identity": identity, "completed_steps": 2})
    assert find_checkpoint("latest", tmp_path, as_tuple) == checkpoint
    with pytest.raises(TrainingConfigError, match="seed: 42 there, 1 now"):
        find_checkpoint("latest", tmp_path, {**as_tuple, "seed": 1})


# -- objects for one run ---------------------------------------------------------------------------------------------
def _toy_arrays():
    rng = np.random.default_rng(0)
    labels = np.arange(40) % 2
    images = (rng.integers(0, 60, (40, 8, 8)) + 150 * labels[:, None, None]).astype(np.uint8)
    return images, labels


TOY = BuiltinDataset("toy-for-one-run", ("dark", "light"), _toy_arrays, "40 toy images.", "a test", "mit")


def _own_filters(model):
    from masterkey.extract import extract_filters

    return ResolvedFilters("own-random", extract_filters(model, description="the target's own random kernels"))


def test_extra_filters_and_datasets_are_looked_up_first(tmp_path):
    import timm

    model = timm.create_model("mobilenetv3_small_050", num_classes=2)
    resolved = resolve_filters("random", model, extra_filters={"random": _own_filters})
    assert resolved.spec == "own-random"  # the call's own entry wins over the registry's
    dsd = load_image_dataset(TOY.name, cache_dir=tmp_path, extra_datasets={TOY.name: TOY})
    assert (len(dsd["train"]), len(dsd["test"])) == (32, 8)
    assert TOY.name not in BUILTIN_DATASETS


@pytest.fixture(scope="module")
def pushed_run(tmp_path_factory):
    """A tiny run on a dataset and with filters of its own, pushed to a fake Hub; the messages it logged."""
    import huggingface_hub

    import masterkey.hub

    out = tmp_path_factory.mktemp("own-objects") / "run"
    calls, records = {}, []

    class FakeApi:
        def __init__(self, token=None, **kwargs):
            calls["token"] = token

        def create_repo(self, repo_id, exist_ok=False, **kwargs):
            return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

        def upload_folder(self, **kwargs):
            calls["upload"] = kwargs

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler, logger = Collect(level=logging.INFO), logging.getLogger("masterkey")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    registries = (dict(BUILTIN_DATASETS), dict(NAMED_FILTERS))
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(masterkey.hub, "HfApi", FakeApi)
            mp.setattr(huggingface_hub.constants, "ENDPOINT", "https://huggingface.co")
            mp.delenv("HF_HUB_OFFLINE", raising=False)
            results = train_transfer(
                model="mobilenetv3_small_050", dataset_name=TOY.name, filters="mine", resolution=32,
                num_train_epochs=1, per_device_train_batch_size=8, dataloader_num_workers=0, cpu_threads=1,
                output_dir=str(out), push_to_hub=True, hub_model_id="org/toy-run", hub_token="hf_t",
                extra_datasets={TOY.name: TOY}, extra_filters={"mine": _own_filters},
            )  # fmt: skip
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return results, records, calls, registries


def test_a_run_with_its_own_dataset_and_filters_leaves_the_registries_alone(pushed_run):
    results, _, _, (datasets_before, filters_before) = pushed_run
    assert dict(BUILTIN_DATASETS) == datasets_before and TOY.name not in BUILTIN_DATASETS
    assert dict(NAMED_FILTERS) == filters_before and "mine" not in NAMED_FILTERS
    data = results["dataset"]
    assert data["builtin"] and data["id"] == TOY.name and data["description"] == "40 toy images."
    assert (data["num_train"], data["num_eval"], data["label_names"]) == (32, 8, ["dark", "light"])
    assert results["filters"]["spec"] == "own-random" and results["filters"]["frozen"]
    assert results["config"]["filters"] == "mine" and results["config"]["dataset_name"] == TOY.name  # names, in JSON
    assert results["config"]["hub_token"] == "<redacted>"


def test_a_run_logs_its_summary_and_pushes_through_the_one_hub_upload(pushed_run):
    from masterkey.training.outputs import PUSH_IGNORE_PATTERNS

    results, records, calls, _ = pushed_run
    messages = [r.getMessage() for r in records if r.name.startswith("masterkey.training")]
    assert sum("saved to" in m for m in messages) == 1
    assert f"{results['model']} on {TOY.name} (masterkey built-in)" in "\n".join(messages)
    assert "pushed to https://huggingface.co/org/toy-run" in messages
    upload = calls["upload"]
    assert upload["repo_id"] == "org/toy-run" and upload["folder_path"] == results["output_dir"]
    assert upload["ignore_patterns"] == list(PUSH_IGNORE_PATTERNS) and calls["token"] == "hf_t"


def test_every_run_gets_the_demo_recipe_the_demo_differs_only_in_dataset_and_comparison():
    from masterkey.training import DEMO_ARGS, make_config, parse_args

    demo, mine = parse_args([]), parse_args(["--dataset_name", "digits"])
    recipe = ("learning_rate", "lr_scheduler_type", "num_warmup_steps", "crop_scale", "num_train_epochs",
              "per_device_train_batch_size", "weight_decay", "model", "filters")  # fmt: skip
    assert {k: getattr(demo, k) for k in recipe} == {k: getattr(mine, k) for k in recipe}
    assert (mine.learning_rate, mine.lr_scheduler_type, mine.num_warmup_steps, list(mine.crop_scale)) == (
        2e-3, "cosine", 50, [0.5, 1.0])  # fmt: skip
    assert make_config().learning_rate == 2e-3
    given = {DEMO_ARGS[i].lstrip("-") for i in range(len(DEMO_ARGS)) if DEMO_ARGS[i].startswith("--")}
    assert given == {"model", "filters", "dataset_name", "resolution", "compare_with_scratch"}
