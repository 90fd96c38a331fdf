"""One grammar for every name a user types (``masterkey.names``), the listings (``masterkey list``,
``masterkey.list_names``), and every built-in bank taken through ``load_master_filters``,
``from_pretrained_filters`` and ``examples/transfer.py --filters``."""

from __future__ import annotations

import json
import pickle
import warnings

import pytest
from conftest import run_example

import masterkey
from masterkey import cli
from masterkey.catalog import NAME_FORMS, NAME_KINDS, list_names
from masterkey.errors import ArgumentError, BankNotFoundError, UnknownNameError
from masterkey.hub import BUILTIN_BANKS
from masterkey.names import (
    FILTER_KEYWORDS,
    FITTED_PREFIX,
    LEGACY_FITTED_PREFIX,
    BankRef,
    parse_bank,
    parse_dataset,
    parse_filters,
)
from masterkey.training import BUILTIN_DATASETS, NAMED_FILTERS

#: Every built-in bank with a target it fits and the mapping that takes it there (a test below checks this covers
#: BUILTIN_BANKS): the ImageNet lite banks into their own architecture, MobileNetV2 into timm's copy of it by depth,
#: the universal keys (one 7x7 entry) into ConvNeXt's 7x7 convs by depth.
BANK_TARGETS = {
    "imagenet-lite0": ("tf_efficientnet_lite0", "exact"),
    "imagenet-lite1": ("tf_efficientnet_lite1", "exact"),
    "imagenet-lite2": ("tf_efficientnet_lite2", "exact"),
    "imagenet-mobilenetv2": ("mobilenetv2_100", "depth"),
    "universal-learned-8": ("convnext_atto", "depth"),
    "universal-idealized-8": ("convnext_atto", "depth"),
}


# -- the grammar ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "kind", "bank", "keys"),
    [
        ("none", "none", None, None),
        ("scratch", "none", None, None),
        ("", "none", None, None),
        ("own", "own", None, None),
        ("random", "random", None, None),
        ("universal-learned", "keys", None, "learned"),
        ("universal-idealized", "keys", None, "idealized"),
        ("universal-learned-8", "bank", BankRef("builtin", "universal-learned-8"), None),  # a bank (issue 26)
        ("universal-idealized-8", "bank", BankRef("builtin", "universal-idealized-8"), None),
        ("imagenet-lite0", "bank", BankRef("builtin", "imagenet-lite0"), None),
        ("org/convnext-dw", "bank", BankRef("hub", "org/convnext-dw"), None),
        ("./banks/mine", "bank", BankRef("folder", "./banks/mine"), None),
        ("/no/such/bank", "bank", BankRef("folder", "/no/such/bank"), None),
        ("fitted:imagenet-lite0", "fitted", BankRef("builtin", "imagenet-lite0"), "learned"),
        ("fitted:universal-learned-8", "fitted", BankRef("builtin", "universal-learned-8"), "learned"),
        ("fitted:org/convnext-dw", "fitted", BankRef("hub", "org/convnext-dw"), "learned"),
        ("fitted:./banks/mine", "fitted", BankRef("folder", "./banks/mine"), "learned"),
    ],
)
def test_every_form_of_a_filters_spec_parses_to_its_kind(spec, kind, bank, keys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these forms is deprecated
        parsed = parse_filters(spec)
    assert (parsed.kind, parsed.bank, parsed.keys, parsed.deprecated) == (kind, bank, keys, False)
    assert parsed.canonical == ("none" if kind == "none" else spec)


def test_no_prefix_collides_with_a_bank_name_and_an_exact_builtin_name_always_wins():
    assert BUILTIN_BANKS and set(BUILTIN_BANKS).isdisjoint(FILTER_KEYWORDS)
    for name in BUILTIN_BANKS:
        assert ":" not in name and not name.startswith(FITTED_PREFIX)  # Hub ids cannot hold ':' either
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert parse_filters(name).bank == parse_bank(name) == BankRef("builtin", name)
            assert parse_filters(FITTED_PREFIX + name).bank == BankRef("builtin", name)
    # the fixed words are exactly the named filters that ship (none aside), so no name is parsed two ways
    assert set(FILTER_KEYWORDS) - {"none"} == set(NAMED_FILTERS)


def test_the_old_universal_bank_spelling_still_fits_the_keys_with_a_deprecation_warning(tmp_path, monkeypatch):
    with pytest.warns(FutureWarning, match="write 'fitted:imagenet-lite0'"):
        parsed = parse_filters("universal-imagenet-lite0")
    assert (parsed.kind, parsed.bank, parsed.deprecated) == ("fitted", BankRef("builtin", "imagenet-lite0"), True)
    assert parsed.canonical == "fitted:imagenet-lite0"
    with pytest.warns(FutureWarning):
        assert parse_filters("universal-org/bank").bank == BankRef("hub", "org/bank")
    # an existing folder of that name is a bank, as before
    monkeypatch.chdir(tmp_path)
    (tmp_path / "universal-mine").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_filters("universal-mine").bank == BankRef("folder", "universal-mine")


def test_banks_parse_folder_then_builtin_then_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_bank("imagenet-lite0") == BankRef("builtin", "imagenet-lite0")
    (tmp_path / "imagenet-lite0").mkdir()  # an existing folder wins, as in load_master_filters
    assert parse_bank("imagenet-lite0") == BankRef("folder", "imagenet-lite0")
    assert parse_bank("org/name").kind == "hub" and parse_bank("a/b/c").kind == "folder"
    (tmp_path / "fitted:odd").mkdir()  # a folder named like a prefix is reached with ./
    assert parse_filters("./fitted:odd").bank == BankRef("folder", "./fitted:odd")


def test_unknown_names_are_typed_errors_that_say_what_is_accepted_and_what_was_meant():
    with pytest.raises(UnknownNameError, match="Did you mean 'random'") as caught:
        parse_filters("randon")
    assert caught.value.suggestions[0] == "random" and caught.value.kind == "filters"
    assert "fitted:<bank>" in str(caught.value) and "masterkey list filters" in str(caught.value)
    with pytest.raises(UnknownNameError, match="imagenet-lite0"):
        parse_filters("fitted:imagenet-lite")
    with pytest.raises(UnknownNameError, match="Did you mean 'imagenet-mobilenetv2'") as caught:
        parse_bank("imagenet-mobilenet")
    assert isinstance(caught.value, BankNotFoundError)  # unknown names always were BankNotFoundError
    # load_master_filters looks a bare word up on the Hub (here in the cache only), then says what was probably meant
    with pytest.raises(UnknownNameError, match="Did you mean 'imagenet-lite0'"):
        masterkey.load_master_filters("imagenet-lite00", local_files_only=True)
    # the errors cross process boundaries (experiment workers) with their attributes
    again = pickle.loads(pickle.dumps(caught.value))
    assert type(again) is UnknownNameError and again.suggestions == caught.value.suggestions and str(again)


def test_datasets_parse_builtin_then_folder_then_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_dataset("digits", builtin=BUILTIN_DATASETS).kind == "builtin"
    assert parse_dataset("uoft-cs/cifar10", builtin=BUILTIN_DATASETS).kind == "hub"
    assert parse_dataset("cifar10", builtin=BUILTIN_DATASETS).kind == "hub"  # a canonical Hub dataset
    assert parse_dataset("./photos", builtin=BUILTIN_DATASETS).kind == "folder"
    (tmp_path / "digits").mkdir()  # a local folder of that name wins, as in load_image_dataset
    assert parse_dataset("digits", builtin=BUILTIN_DATASETS).kind == "folder"


# -- the listings ---------------------------------------------------------------------------------------------------
def test_every_registry_lists_its_names_without_building_or_downloading(tmp_path, monkeypatch):
    monkeypatch.setenv("MASTERKEY_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert list(list_names("banks")) == list(BUILTIN_BANKS)
    assert list(list_names("datasets")) == list(BUILTIN_DATASETS)
    assert tuple(list_names("zoo")) == masterkey.publishing.ZOO
    filters = list_names("filters")
    assert set(FILTER_KEYWORDS) | set(NAMED_FILTERS) | set(BUILTIN_BANKS) <= set(filters)
    assert {FITTED_PREFIX + b for b in BUILTIN_BANKS} <= set(filters)
    assert not any(name.startswith(LEGACY_FITTED_PREFIX) and name not in FILTER_KEYWORDS and name not in BUILTIN_BANKS
                   for name in filters)  # deprecated spellings are never listed  # fmt: skip
    for kind in NAME_KINDS:
        assert all(isinstance(d, str) and d for d in list_names(kind).values()), kind
    for name in filters:  # everything listed parses, without a warning
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            parse_filters(name)
    assert list(list_names("banks", pattern="universal-*")) == ["universal-learned-8", "universal-idealized-8"]
    assert list_names("filters", pattern="nothing-*") == {}
    with pytest.raises(ArgumentError, match="Did you mean 'banks'"):
        list_names("bank")
    assert not (tmp_path / "home").exists()  # no bank was built (nor cached)
    assert masterkey.list_names is list_names and set(NAME_FORMS) == set(NAME_KINDS)


def test_masterkey_list_prints_a_table(capsys):
    assert cli.LIST_KINDS == NAME_KINDS  # the parser (no torch at --help) offers exactly what can be listed
    assert cli.main(["list", "filters"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["name", "description"]
    rows = {line.split()[0] for line in out[1:] if line and not line.startswith(" ")}
    assert {"none", "own", "random", "universal-learned-8", "fitted:imagenet-lite0"} <= rows
    assert any(line.strip().startswith("fitted:BANK") for line in out)
    assert cli.main(["list", "banks", "imagenet-lite*"]) == 0
    out = capsys.readouterr().out
    assert "imagenet-lite2" in out and "universal-learned-8" not in out
    with pytest.raises(SystemExit):
        cli.main(["list", "nothing"])


# -- every built-in bank, end to end --------------------------------------------------------------------------------
def test_the_test_below_covers_every_builtin_bank():
    assert set(BANK_TARGETS) == set(BUILTIN_BANKS)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BANK_TARGETS))
def test_every_builtin_bank_loads_injects_and_trains_through_filters(name, tmp_path, capsys):
    """Each built-in bank by its name: ``load_master_filters``, ``from_pretrained_filters`` and
    ``examples/transfer.py --filters NAME`` (one step at 32 px on digits). For ``universal-learned-8`` this is the
    command issue 26 found failing with ``Filter bank 'learned-8' not found``."""
    target, mapping = BANK_TARGETS[name]
    bank = masterkey.load_master_filters(name)
    assert len(bank) > 0 and bank.config.get("source_license")
    model = masterkey.from_pretrained_filters(target, name, mapping=mapping, num_classes=10)
    report = model.masterkey_report
    assert report.injected and not report.skipped, str(report)
    out = tmp_path / "run"
    code = run_example(["--model", target, "--filters", name, "--mapping", mapping, "--dataset_name", "digits",
                        "--resolution", "32", "--max_train_samples", "16", "--max_eval_samples", "16",
                        "--per_device_train_batch_size", "8", "--max_train_steps", "1", "--cpu_threads", "1",
                        "--output_dir", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err[-2000:]
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["filters"] == name and results["filters"]["provenance"]["filters"] == name
    assert results["filters"]["injected"] and not results["filters"]["untouched"]
    assert results["parameters"]["trainable_percent"] < 100  # the injected kernels are frozen


def test_fitted_and_its_old_spelling_inject_the_same_kernels(tmp_path):
    """``fitted:<bank>`` (and the deprecated ``universal-<bank>``): the 8 learned keys fitted to any bank."""
    import timm
    import torch

    from masterkey.extract import extract_filters, find_depthwise_convs
    from masterkey.training.filters import resolve_filters

    torch.manual_seed(0)
    extract_filters(timm.create_model("mobilenetv3_small_050", num_classes=10)).save_pretrained(tmp_path / "bank")
    kernels = []
    for spec in (f"{FITTED_PREFIX}{tmp_path / 'bank'}", f"{LEGACY_FITTED_PREFIX}{tmp_path / 'bank'}"):
        target = timm.create_model("mobilenetv3_small_050", num_classes=10)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            resolved = resolve_filters(spec, target)
        assert resolved.spec == spec
        assert [w.category for w in caught] == ([FutureWarning] if spec.startswith(LEGACY_FITTED_PREFIX) else [])
        resolved.apply(target, strict=True, freeze=True, trainable="all-but-depthwise", mapping="exact")
        kernels.append([c.module.weight.detach().clone() for c in find_depthwise_convs(target)])
    assert all(torch.equal(a, b) for a, b in zip(*kernels, strict=True))
    with pytest.raises(BankNotFoundError, match="fitted:<bank>"):
        resolve_filters(f"{FITTED_PREFIX}{tmp_path / 'no-bank'}", target)


def test_runs_and_results_recorded_under_the_deprecated_fitted_spelling_are_the_same_as_under_the_new_one(tmp_path):
    """The experiments now name their fitted arm fitted:<bank>: a run recorded as universal-<bank> is still read back
    (--resume), and its results still reach the cards."""
    import warnings

    from masterkey.names import canonical_filters
    from masterkey.training import make_config
    from masterkey.training.config import run_identity
    from masterkey.training.outputs import same_run

    assert canonical_filters("universal-imagenet-lite0") == "fitted:imagenet-lite0"
    for kept in ("universal-learned-8", "universal-idealized", "imagenet-lite0", "none", None, "fitted:x"):
        assert canonical_filters(kept) == kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # quietly: no FutureWarning from comparing records
        canonical_filters("universal-imagenet-lite0")
    new = run_identity(make_config(model="tf_efficientnet_lite0", filters="fitted:imagenet-lite0"))
    old = run_identity(make_config(model="tf_efficientnet_lite0", filters="universal-imagenet-lite0"))
    assert old != new and same_run(old, new) and same_run(new, old)
    assert not same_run({**old, "filters": "fitted:imagenet-lite1"}, new)
