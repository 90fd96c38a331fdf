"""FilterBank: the on-disk format, round trips bit for bit, and every kind of damaged bank."""

import contextlib
import hashlib
import json
import os
import random
import signal
import time
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file, save_file

import masterkey
from masterkey import _atomic as bank_module  # the module that saves bank folders atomically
from masterkey import cli
from masterkey.bank import MAX_CONFIG_BYTES, MAX_FILTERS_BYTES, FilterBank, KernelSpec
from masterkey.constants import CONFIG_NAME, FILTERS_NAME, FORMAT_VERSION
from masterkey.errors import BankFormatError, BankNotFoundError, InvalidFiltersError, MasterKeyError


@pytest.fixture
def saved_bank(tmp_path, tiny_model):
    bank = masterkey.extract_filters(tiny_model, source_dataset="random-init", source_license="Apache-2.0")
    bank.save_pretrained(tmp_path / "bank")
    return bank, tmp_path / "bank"


def test_save_writes_the_three_files_in_the_documented_layout(saved_bank):
    bank, folder = saved_bank
    assert sorted(p.name for p in folder.iterdir()) == sorted([FILTERS_NAME, CONFIG_NAME, "README.md"])
    tensors = load_file(folder / FILTERS_NAME)
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["format_version"] == FORMAT_VERSION and config["library_name"] == "masterkey"
    assert config["source_model"] == "convnext_atto" and config["source_dataset"] == "random-init"
    assert [e["name"] for e in config["filters"]] == bank.names
    first = config["filters"][0]
    assert first["name"] == "stages.0.blocks.0.conv_dw"
    assert first["kernel_size"] == [7, 7] and first["channel_multiplier"] == 1 and first["stage"] == 0
    # relative depth counts stages: ConvNeXt-atto has 4, of 2, 2, 6 and 2 blocks; a stage's blocks spread inside it
    assert first["relative_depth"] == (0 + 0.5 / 2) / 4 and config["filters"][-1]["relative_depth"] == (3 + 1.5 / 2) / 4
    for entry in config["filters"]:
        assert tensors[entry["name"]].dtype == torch.float32
        assert list(tensors[entry["name"]].shape) == [entry["out_channels"], 1, *entry["kernel_size"]]
    card = (folder / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: masterkey" in card and "convnext_atto" in card


def test_round_trip_is_bit_exact_and_keeps_the_manifest(saved_bank):
    bank, folder = saved_bank
    loaded = masterkey.load_master_filters(folder)
    assert loaded.names == bank.names and len(loaded) == len(bank) == 12
    assert loaded.num_parameters == bank.num_parameters == sum(t.numel() for _, t in bank.items())
    assert loaded.specs == bank.specs
    for name in bank.names:
        assert torch.equal(loaded[name], bank[name])
    assert loaded.config == bank.config


def test_bank_values_are_the_model_weights(tiny_model):
    bank = masterkey.extract_filters(tiny_model)
    for name in bank.names:
        assert torch.equal(bank[name], tiny_model.get_submodule(name).weight)
    assert "stages.0.blocks.0.conv_dw" in bank and "head.fc" not in bank
    with pytest.raises(KeyError, match="not in this bank"):
        bank["head.fc"]


def test_from_tensors_builds_a_valid_bank(tmp_path):
    bank = FilterBank.from_tensors({"a": torch.randn(4, 3, 3), "b": torch.randn(6, 1, 5, 5)}, source_dataset="noise")
    assert bank.names == ["a", "b"] and bank.spec("b").kernel_size == (5, 5) and bank.spec("b").relative_depth == 0.75
    # names without a stage number make one stage: its layers spread evenly, at 1/4 and 3/4
    bank.save_pretrained(tmp_path / "b")
    assert torch.equal(masterkey.load_master_filters(tmp_path / "b")["a"], bank["a"])


def test_kernel_spec_round_trips_through_dict():
    spec = KernelSpec("x", in_channels=8, out_channels=16, kernel_size=(1, 9), stride=(2, 2), index=3, stage=1)
    assert spec.channel_multiplier == 2 and spec.shape == (16, 1, 1, 9)
    assert KernelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


# -- damaged banks: typed errors that say what to do -------------------------------------------------------------


def test_truncated_safetensors(saved_bank):
    _, folder = saved_bank
    data = (folder / FILTERS_NAME).read_bytes()
    (folder / FILTERS_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(BankFormatError, match="truncated or not safetensors"):
        masterkey.load_master_filters(folder)


def test_corrupted_safetensors_header(saved_bank):
    _, folder = saved_bank
    (folder / FILTERS_NAME).write_bytes(b"\xff" * 64)
    with pytest.raises(BankFormatError):
        masterkey.load_master_filters(folder)


def test_missing_filters_file(saved_bank):
    _, folder = saved_bank
    (folder / FILTERS_NAME).unlink()
    with pytest.raises(BankFormatError, match=FILTERS_NAME):
        masterkey.load_master_filters(folder)


def test_missing_config(saved_bank):
    _, folder = saved_bank
    (folder / CONFIG_NAME).unlink()
    with pytest.raises(BankFormatError, match=CONFIG_NAME):
        masterkey.load_master_filters(folder)


@pytest.mark.parametrize(
    "content, match",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a masterkey bank config"),
        (json.dumps({"format_version": 1}), "no 'filters' manifest"),
        (json.dumps({"format_version": 1, "filters": [{"name": "x"}]}), "Malformed manifest entry"),
    ],
)
def test_malformed_config(saved_bank, content, match):
    _, folder = saved_bank
    (folder / CONFIG_NAME).write_text(content)
    with pytest.raises(BankFormatError, match=match):
        masterkey.load_master_filters(folder)


def test_unknown_format_version(saved_bank):
    _, folder = saved_bank
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["format_version"] = FORMAT_VERSION + 1
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(BankFormatError, match="Upgrade masterkey"):
        masterkey.load_master_filters(folder)


def test_tensor_shape_disagrees_with_manifest(saved_bank):
    bank, folder = saved_bank
    tensors = load_file(folder / FILTERS_NAME)
    first = bank.names[0]
    tensors[first] = tensors[first][:, :, :3, :3].contiguous()
    save_file(tensors, folder / FILTERS_NAME)
    with pytest.raises(BankFormatError, match=f"{first}: tensor \\(40, 1, 3, 3\\), manifest \\(40, 1, 7, 7\\)"):
        masterkey.load_master_filters(folder)


def test_tensor_missing_from_file(saved_bank):
    bank, folder = saved_bank
    tensors = load_file(folder / FILTERS_NAME)
    del tensors[bank.names[-1]]
    save_file(tensors, folder / FILTERS_NAME)
    with pytest.raises(BankFormatError, match="disagree"):
        masterkey.load_master_filters(folder)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_inf_kernels(saved_bank, bad):
    bank, folder = saved_bank
    tensors = load_file(folder / FILTERS_NAME)
    tensors[bank.names[2]][0, 0, 3, 3] = bad
    save_file(tensors, folder / FILTERS_NAME)
    with pytest.raises(InvalidFiltersError, match=bank.names[2].replace(".", r"\.")):
        masterkey.load_master_filters(folder)


def test_nan_model_cannot_be_extracted(tiny_model):
    with torch.no_grad():
        tiny_model.stages[1].blocks[0].conv_dw.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(InvalidFiltersError, match="stages.1.blocks.0.conv_dw"):
        masterkey.extract_filters(tiny_model)


def test_a_file_or_a_missing_folder_is_not_a_bank(saved_bank, tmp_path):
    _, folder = saved_bank
    with pytest.raises(BankNotFoundError, match="is a file"):
        masterkey.load_master_filters(folder / FILTERS_NAME)
    with pytest.raises(BankNotFoundError, match="neither an existing local folder nor a valid Hub repo id"):
        masterkey.load_master_filters(str(tmp_path / "no" / "such" / "bank"))


def test_every_error_is_a_masterkey_error():
    from masterkey import errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), MasterKeyError)


def test_import_masterkey_does_not_import_extras():
    import subprocess
    import sys

    code = (
        "import sys, masterkey; masterkey.FilterBank; masterkey.from_pretrained_filters;"
        "bad=[m for m in ('accelerate','datasets','evaluate','transformers','matplotlib') if m in sys.modules];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr



def test_relative_depth_has_one_definition_whatever_the_file_says(tmp_path):
    from masterkey.bank import layer_positions, relative_depths

    names = ["stages.0.blocks.0.conv_dw", "stages.1.blocks.0.conv_dw", "stages.1.blocks.1.conv_dw"]
    # stage 0 of 2 holds one layer (its middle: 1/4), stage 1 two (3/8 and 7/8 of the way: 5/8, 7/8)
    assert relative_depths(names) == [0.25, 0.625, 0.875]
    # the splits of one MixedConv2d are one layer: same depth, spread positions
    mixed = layer_positions(["blocks.0.conv.0", "blocks.0.conv.1"])
    assert mixed["blocks.0.conv.0"][0] == mixed["blocks.0.conv.1"][0] and mixed["blocks.0.conv.1"][1] == 0.75
    bank = FilterBank.from_tensors({n: torch.randn(2, 1, 3, 3) for n in names})
    bank.save_pretrained(tmp_path / "b")
    config = json.loads((tmp_path / "b" / CONFIG_NAME).read_text())
    for entry, depth in zip(config["filters"], [0.0, 0.5, 1.0]):  # an older file's index-based depths
        entry["relative_depth"] = depth
    (tmp_path / "b" / CONFIG_NAME).write_text(json.dumps(config))
    assert [s.relative_depth for s in FilterBank.from_pretrained(tmp_path / "b").specs] == [0.25, 0.625, 0.875]


# -- the schema of config.json: every violation is a BankFormatError naming the field ------------------------------


@contextlib.contextmanager
def within(seconds):
    """Fail instead of hanging (a FIFO opened for reading blocks until a writer comes)."""

    def hang(signum, frame):
        raise AssertionError(f"took more than {seconds} s: hung")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


class _Text(str):
    """config.json text written as is (what json.dumps cannot write: NaN, 1e999, deep nesting)."""


def _text(edit):
    return lambda config: _Text(edit(config))


def _edit_config(folder, edit):
    config = json.loads((folder / CONFIG_NAME).read_text())
    text = edit(config)
    (folder / CONFIG_NAME).write_text(text if isinstance(text, _Text) else json.dumps(config))


def _entry(field, value):
    def edit(config):
        config["filters"][1][field] = value

    return edit


@pytest.mark.parametrize(
    "edit, match",
    [
        (_entry("in_channels", 0), r"filters\[1\].*'in_channels' must be an integer in \[1, "),
        (_entry("in_channels", -3), r"'in_channels' must be an integer in \[1, "),
        (_entry("out_channels", 0), r"'out_channels' must be an integer in \[1, "),
        (_entry("in_channels", 48), r"'out_channels' \(40\) must be a multiple of 'in_channels' \(48\)"),
        (_entry("in_channels", True), r"'in_channels' must be an integer >= 1, found boolean True"),
        (_entry("in_channels", 80.0), r"'in_channels' must be an integer >= 1, found number 80.0"),
        (_entry("in_channels", "80"), r"'in_channels' must be an integer >= 1, found string '80'"),
        (_entry("kernel_size", [7, 7, 7]), r"'kernel_size' must be an integer or a list of 2 integers, found a list of 3"),
        (_entry("kernel_size", [7, 0]), r"'kernel_size\[1\]' must be an integer in \[1, "),
        (_entry("stride", 0), r"'stride' must be an integer in \[1, "),
        (_entry("dilation", [1, -1]), r"'dilation\[1\]' must be an integer in \[1, "),
        (_entry("index", -1), r"'index' must be an integer in \[0, "),
        (_entry("stage", -1), r"'stage' must be an integer in \[0, "),
        (_entry("stage", 2**40), r"'stage' must be an integer in \[0, 2147483647\]"),
        (_entry("relative_depth", 1.5), r"'relative_depth' must be a number in \[0, 1\]"),
        (_entry("relative_depth", None), r"'relative_depth' must be a number in \[0, 1\], found null"),
        (_entry("channel_multiplier", 2), r"'channel_multiplier' must equal out_channels / in_channels = 1"),
        (_entry("name", ""), r"'name' must be a non-empty string"),
        (_entry("name", "a\x00b"), r"'name' must be a non-empty string .* without NUL"),
        (_entry("name", "x" * 513), r"at most 512 characters"),
        (_entry("name", 7), r"'name' must be a non-empty string .* found integer 7"),
        (lambda c: c["filters"].__setitem__(1, 7), r"filters\[1\] in config.json .*: it is integer 7, not an object"),
        (lambda c: c["filters"].__setitem__(1, None), r"filters\[1\] .*: it is null, not an object"),
        (lambda c: c["filters"].__setitem__(1, ["x"]), r"filters\[1\] .*: it is array \['x'\], not an object"),
        (lambda c: c.__setitem__("filters", None), r"'filters' in config.json .* must be a list .* found null"),
        (lambda c: c.__setitem__("filters", 3), r"'filters' .* must be a list of manifest entries, found integer 3"),
        (lambda c: c.__setitem__("filters", []), r"lists no kernels"),
        (lambda c: c["filters"].append(dict(c["filters"][0])), r"(num_kernels|repeats the name)"),
        (lambda c: c.__setitem__("num_kernels", 99), r"'num_kernels' .* is integer 99 but the manifest lists 12"),
        (lambda c: c.__setitem__("format_version", True), r"format version True.*Upgrade masterkey"),
        (lambda c: c.__setitem__("source_model", 5), r"'source_model' .* must be a string \(valid Unicode\) or null"),
        (lambda c: c.__setitem__("extra", [1]), r"'extra' .* must be an object, found array"),
        (lambda c: c.__setitem__("filters_sha256", "ABC"), r"'filters_sha256' .* must be 64 lowercase hex digits"),
        (_text(lambda c: json.dumps(c).replace('"relative_depth": 0.0625', '"relative_depth": NaN', 1)),
         r"non-finite number \(nan\) at filters\[0\]\.relative_depth"),
        (_text(lambda c: json.dumps(c).replace('"in_channels": 40', '"in_channels": 1e999', 1)),
         r"non-finite number \(inf\) at filters\[0\]\.in_channels"),
        (_text(lambda c: json.dumps(c).replace('"in_channels": 40', '"in_channels": Infinity', 1)), r"non-finite number"),
        (_text(lambda c: json.dumps(c).replace('"in_channels": 40', '"in_channels": ' + "9" * 5000, 1)), r"not valid JSON"),
        (_text(lambda c: json.dumps({**c, "extra": "__DEEP__"}).replace('"__DEEP__"', "[" * 100_000 + "]" * 100_000)),
         r"nested deeper than 32 levels"),
        (_text(lambda c: json.dumps({**c, "extra": "__DEEP__"}).replace('"__DEEP__"', "[" * 40 + "]" * 40)),
         r"nested deeper than 32 levels"),
        (_text(lambda c: json.dumps({**c, "description": "__S__"}).replace('"__S__"', '"\\ud800"')), r"valid Unicode"),
    ],
)
def test_config_schema_violations_are_typed_errors_naming_the_field(saved_bank, edit, match):
    _, folder = saved_bank
    _edit_config(folder, edit)
    with pytest.raises(BankFormatError, match=match):
        FilterBank.from_pretrained(folder)
    with pytest.raises(BankFormatError, match=match):
        masterkey.load_master_filters(folder)


def test_an_entry_error_names_the_entry_without_converting_it(saved_bank):
    _, folder = saved_bank
    _edit_config(folder, _entry("in_channels", 0))
    with pytest.raises(BankFormatError, match=r"filters\[1\] in config.json of .* \('stages.0.blocks.1.conv_dw'\)"):
        FilterBank.from_pretrained(folder)
    # the message says what to do
    with pytest.raises(BankFormatError, match="rebuild it with masterkey.extract_filters"):
        FilterBank.from_pretrained(folder)


def test_fields_that_change_nothing_may_be_edited(saved_bank):
    bank, folder = saved_bank

    def edit(config):
        for entry in config["filters"]:
            entry["relative_depth"] = 0.5  # recomputed from the names anyway
            del entry["channel_multiplier"]  # derived
        config["description"] = "edited"
        config.pop("num_kernels")
        config["future_field"] = {"a": [1, 2]}

    _edit_config(folder, edit)
    loaded = FilterBank.from_pretrained(folder)
    assert loaded.specs == bank.specs and all(torch.equal(loaded[n], bank[n]) for n in bank.names)


# -- files: regular files only, under a size cap, checked before they are opened --------------------------------------


def _make_special(path, kind, folder):
    content = path.read_bytes()
    path.unlink()
    if kind == "directory":
        path.mkdir()
    elif kind == "dangling symlink":
        path.symlink_to(folder / "nowhere")
    elif kind == "symlink loop":
        path.symlink_to(folder / "other")
        (folder / "other").symlink_to(path)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "/dev/zero":
        path.symlink_to("/dev/zero")
    elif kind == "too large":
        path.write_bytes(content)
        os.truncate(path, (MAX_CONFIG_BYTES if path.name == CONFIG_NAME else MAX_FILTERS_BYTES) + 1)  # sparse


@pytest.mark.parametrize("name", [CONFIG_NAME, FILTERS_NAME])
@pytest.mark.parametrize(
    "kind, match",
    [
        ("directory", "is not a regular file \\(it is a directory\\)"),
        ("dangling symlink", "is a symbolic link to nothing"),
        ("symlink loop", "Too many levels of symbolic links"),
        ("fifo", "is not a regular file \\(it is a named pipe \\(FIFO\\)\\)"),
        ("/dev/zero", "is not a regular file \\(it is a character device\\)"),
        ("too large", "is too large"),
    ],
)
def test_bank_files_that_are_not_regular_files_or_too_large(saved_bank, name, kind, match):
    _, folder = saved_bank
    _make_special(folder / name, kind, folder)
    with within(20):
        with pytest.raises(BankFormatError, match=match) as info:
            masterkey.load_master_filters(folder)
    assert "download or save the bank again" in str(info.value)


# -- kernels: floating point, non-empty, and exactly the bytes that were saved ----------------------------------------


def _rewrite_filters(folder, tensors, *, record=True):
    """Replace filters.safetensors, updating the recorded SHA-256 (a deliberately re-made file, not damage)."""
    save_file(tensors, folder / FILTERS_NAME)
    if record:
        digest = hashlib.sha256((folder / FILTERS_NAME).read_bytes()).hexdigest()
        _edit_config(folder, lambda c: c.__setitem__("filters_sha256", digest))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool, torch.float8_e4m3fn])
def test_integer_and_bool_kernels_are_refused_naming_the_dtype(saved_bank, dtype):
    bank, folder = saved_bank
    tensors = load_file(folder / FILTERS_NAME)
    tensors[bank.names[3]] = tensors[bank.names[3]].to(dtype)
    _rewrite_filters(folder, tensors)
    found = str(dtype).removeprefix("torch.")
    with pytest.raises(BankFormatError, match=(
        rf"kernels must be floating point \(float32, float16, bfloat16, float64\); found {found} in "
        rf"'{bank.names[3]}'"
    )):  # fmt: skip
        masterkey.load_master_filters(folder)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_float_kernels_load_as_float32(saved_bank, dtype):
    bank, folder = saved_bank
    _rewrite_filters(folder, {n: t.to(dtype) for n, t in load_file(folder / FILTERS_NAME).items()})
    loaded = masterkey.load_master_filters(folder)
    for name in bank.names:
        assert loaded[name].dtype == torch.float32 and torch.equal(loaded[name], bank[name].to(dtype).float())


@pytest.mark.parametrize("shape", [(0, 1, 7, 7), (40, 1, 0, 0)])
def test_empty_kernels_are_refused(saved_bank, shape):
    bank, folder = saved_bank
    tensors = load_file(folder / FILTERS_NAME)
    tensors[bank.names[0]] = torch.zeros(shape)
    _rewrite_filters(folder, tensors)
    with pytest.raises(BankFormatError, match="Tensor shapes disagree"):
        masterkey.load_master_filters(folder)
    _edit_config(folder, _entry("out_channels", 0))
    with pytest.raises(BankFormatError, match="'out_channels' must be an integer in"):
        masterkey.load_master_filters(folder)


def test_save_records_the_sha256_of_the_filters_file(saved_bank):
    _, folder = saved_bank
    config = json.loads((folder / CONFIG_NAME).read_text())
    assert config["filters_sha256"] == hashlib.sha256((folder / FILTERS_NAME).read_bytes()).hexdigest()


def test_any_bit_flip_in_the_kernels_is_detected(saved_bank):
    bank, folder = saved_bank
    data = bytearray((folder / FILTERS_NAME).read_bytes())
    body = 8 + int.from_bytes(data[:8], "little")
    rng = random.Random(0)
    for _ in range(20):
        damaged = bytearray(data)
        i = rng.randrange(body, len(data))
        damaged[i] ^= 1 << rng.randrange(8)
        (folder / FILTERS_NAME).write_bytes(bytes(damaged))
        with pytest.raises((BankFormatError, InvalidFiltersError)) as info:
            masterkey.load_master_filters(folder)
        assert "NaN or Inf" in str(info.value) or str(info.value) == (
            f"{FILTERS_NAME} of {str(folder)!r} does not match the SHA-256 recorded in {CONFIG_NAME}: the file is "
            "damaged or was changed; download or save the bank again."
        )


def test_banks_saved_before_the_sha256_was_recorded_still_load(saved_bank):
    bank, folder = saved_bank
    _edit_config(folder, lambda c: c.pop("filters_sha256"))
    loaded = masterkey.load_master_filters(folder)
    assert loaded.config == bank.config and all(torch.equal(loaded[n], bank[n]) for n in bank.names)
    # the hash describes a file, not the bank: it is not part of bank.config
    assert "filters_sha256" not in masterkey.load_master_filters(saved_bank[1]).config


# -- building banks in Python: typed errors, never a crash later -----------------------------------------------------


@pytest.mark.parametrize(
    "filters, match",
    [
        ({"a": torch.randn(3, 3)}, r"'a' has shape \(3, 3\); expected a non-empty \(out_channels, 1, kh, kw\) or "
                                   r"\(n, kh, kw\)"),
        ({"a": torch.randn(2, 2, 3, 3)}, r"'a' has shape \(2, 2, 3, 3\)"),
        ({"a": torch.randn(1, 2, 1, 3, 3)}, r"'a' has shape \(1, 2, 1, 3, 3\)"),
        ({"a": torch.randn(0, 3, 3)}, r"non-empty"),
        ({"a": [[1.0]]}, r"'a' is a list, not a tensor"),
        ([torch.randn(2, 3, 3)], r"expects a dict \{name: tensor\}, not list"),
        ({"a": torch.ones(2, 3, 3, dtype=torch.int64)}, r"must be floating point .* found int64"),
        ({"a": torch.empty(2, 3, 3, device="meta")}, r"meta device"),
        ({3: torch.randn(2, 3, 3)}, r"names must be strings"),
    ],
)
def test_from_tensors_refuses_what_is_not_a_kernel(filters, match):
    with pytest.raises(InvalidFiltersError, match=match):
        FilterBank.from_tensors(filters)


@pytest.mark.parametrize("field, value", [("in_channels", 0), ("out_channels", 0), ("kernel_size", (0, 3)),
                                          ("stride", (1, 0)), ("relative_depth", float("nan"))])  # fmt: skip
def test_invalid_specs_are_refused_when_built(field, value):
    args = {"name": "x", "in_channels": 4, "out_channels": 4, "kernel_size": (3, 3), field: value}
    with pytest.raises(BankFormatError, match=f"'{field}"):
        KernelSpec(**args)
    with pytest.raises(BankFormatError, match=field):
        FilterBank({"x": torch.randn(4, 1, 3, 3)}, {"filters": [{**args, "kernel_size": list(args["kernel_size"])}]})


def test_a_bank_config_must_be_json(tmp_path):
    with pytest.raises(BankFormatError, match="non-finite number"):
        FilterBank.from_tensors({"a": torch.randn(2, 3, 3)}, score=float("nan"))


def test_stage_numbers_are_decimal_and_relative_depth_is_linear_in_the_names():
    assert masterkey.bank.stage_index("stages.\u00b2.conv") is None  # a digit int() cannot read
    names = [f"stages.{i}.conv" for i in range(50_000)]
    start = time.perf_counter()
    depths = masterkey.bank.relative_depths(names)
    assert time.perf_counter() - start < 5 and depths[-1] == (50_000 - 0.5) / 50_000


# -- saving: atomic, the card rewritten, other files kept ------------------------------------------------------------


def _bank(seed, source, n=4, channels=16):
    g = torch.Generator().manual_seed(seed)
    return FilterBank.from_tensors(
        {f"stages.{i}.conv": torch.randn(channels, 1, 7, 7, generator=g) for i in range(n)}, source_model=source
    )


def _same(a, b):
    return a.names == b.names and a.config == b.config and all(torch.equal(a[n], b[n]) for n in a.names)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".masterkey-"))


def test_save_over_an_older_bank_rewrites_the_card_and_keeps_other_files(tmp_path):
    folder = tmp_path / "bank"
    _bank(0, "convnext_atto").save_pretrained(folder)
    (folder / "notes.txt").write_text("mine")
    _bank(1, "mobilenetv3_small_050").save_pretrained(folder)
    card = (folder / "README.md").read_text()
    assert "mobilenetv3_small_050" in card and "convnext_atto" not in card
    assert (folder / "notes.txt").read_text() == "mine" and _leftovers(folder) == []
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", CONFIG_NAME, FILTERS_NAME, "notes.txt"]


def test_cli_extract_over_an_older_bank_writes_the_new_card(tmp_path, tiny_model):
    folder = tmp_path / "bank"
    masterkey.extract_filters(tiny_model).save_pretrained(folder)
    assert "convnext_atto" in (folder / "README.md").read_text()
    assert cli.main(["extract", "mobilenetv3_small_050", "--random", "--out", str(folder)]) == 0
    card = (folder / "README.md").read_text()
    assert "mobilenetv3_small_050" in card and "convnext_atto" not in card
    assert masterkey.load_master_filters(folder).config["source_model"] == "mobilenetv3_small_050"


def test_save_refuses_a_folder_whose_bank_file_is_a_directory(tmp_path):
    folder = tmp_path / "bank"
    old = _bank(0, "old")
    old.save_pretrained(folder)
    (folder / "README.md").unlink()
    (folder / "README.md").mkdir()
    with pytest.raises(BankFormatError, match="its README.md is a directory"):
        _bank(1, "new").save_pretrained(folder)
    assert _same(FilterBank.from_pretrained(folder), old) and _leftovers(folder) == []


def test_push_to_hub_after_saving(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(FilterBank, "push_to_hub", lambda self, **kwargs: calls.append(kwargs) or "url")
    bank = _bank(0, "x")
    assert bank.save_pretrained(tmp_path / "my-bank", push_to_hub=True, model_card_kwargs={"repo_id": "o/b"}) == "url"
    assert calls[0]["repo_id"] == "my-bank" and calls[0]["model_card_kwargs"] == {"repo_id": "o/b"}
    assert bank.save_pretrained(tmp_path / "b2", push_to_hub=True, repo_id="org/name") == "url"
    assert calls[1]["repo_id"] == "org/name"
    assert _same(FilterBank.from_pretrained(tmp_path / "my-bank"), bank)


class _Killed(BaseException):
    """The simulated death of the saving process."""


def test_a_save_killed_at_any_step_leaves_the_old_or_the_new_bank(tmp_path, monkeypatch):
    """Every file-system step of a save (each file written, each fsync, each rename) is the last one once: after
    it the folder must load the old bank or the new one, and the next save must clean up."""
    folder = tmp_path / "bank"
    old, new = _bank(0, "old"), _bank(1, "new")
    steps = {"_write_durably": bank_module._write_durably, "_fsync_dir": bank_module._fsync_dir}
    real_replace, real_rename, real_rmtree = os.replace, os.rename, bank_module.shutil.rmtree
    outcomes, step = Counter(), 0
    while True:
        for path in tmp_path.iterdir():
            real_rmtree(path)
        old.save_pretrained(folder)
        (folder / "notes.txt").write_text("mine")
        calls = {"n": 0, "dead": False}

        def counted(fn):
            def run(*args, **kwargs):
                if calls["dead"]:
                    raise _Killed()
                if calls["n"] == step:
                    calls["dead"] = True  # a killed process runs no cleanup either
                    raise _Killed()
                calls["n"] += 1
                return fn(*args, **kwargs)

            return run

        with monkeypatch.context() as patch:
            for name, fn in steps.items():
                patch.setattr(bank_module, name, counted(fn))
            patch.setattr(bank_module.os, "replace", counted(real_replace))
            patch.setattr(bank_module.os, "rename", counted(real_rename))
            patch.setattr(bank_module.shutil, "rmtree", counted(real_rmtree))
            try:
                new.save_pretrained(folder)
                finished = True
            except _Killed:
                finished = False
        loaded = FilterBank.from_pretrained(folder)
        assert _same(loaded, old) or _same(loaded, new), f"killed at step {step}"
        if not finished:
            outcomes["new" if _same(loaded, new) else "old"] += 1
        assert (folder / "notes.txt").read_text() == "mine"
        new.save_pretrained(folder)  # the next save finishes or removes what the killed one left
        assert _same(FilterBank.from_pretrained(folder), new) and _leftovers(folder) == []
        if finished:
            break
        step += 1
    print(f"\nkilled at each of the {step} file-system steps of a save in turn; the folder then loaded {dict(outcomes)}")
    assert step >= 9 and outcomes["old"] >= 4 and outcomes["new"] >= 3, outcomes


def test_a_save_killed_by_sigkill_at_random_moments_leaves_the_old_or_the_new_bank(tmp_path):
    """48 saves SIGKILLed at seeded random moments: the folder always loads one of the two banks."""
    rng = random.Random(2024)
    folder = tmp_path / "bank"
    old, new = _bank(0, "old", n=24, channels=256), _bank(1, "new", n=24, channels=256)  # 1.2 MB of kernels each
    new.save_pretrained(tmp_path / "timing")
    start = time.perf_counter()
    new.save_pretrained(tmp_path / "timing")
    one_save = time.perf_counter() - start
    old.save_pretrained(folder)
    (folder / "notes.txt").write_text("mine")
    seen, states = Counter(), Counter()
    for kill in range(48):
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child saves the two banks in turn until it is killed
            try:
                os.close(ready_r)
                os.write(ready_w, b"1")
                os.close(ready_w)
                for i in range(10**9):
                    (new if i % 2 == 0 else old).save_pretrained(folder)
            finally:
                os._exit(0)
        os.close(ready_w)
        os.read(ready_r, 1)
        os.close(ready_r)
        time.sleep(rng.uniform(0, 3 * one_save))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        states["pending" if (folder / ".masterkey-pending").exists() else "staging" if _leftovers(folder) else
               "clean"] += 1  # fmt: skip
        loaded = FilterBank.from_pretrained(folder)
        assert _same(loaded, old) or _same(loaded, new), f"kill {kill}: the folder holds neither bank"
        seen[loaded.config["source_model"]] += 1
        assert (folder / "notes.txt").read_text() == "mine"
        if kill % 8 == 7:  # a successful save after kills leaves no temporary folder
            old.save_pretrained(folder)
            assert _leftovers(folder) == [] and _same(FilterBank.from_pretrained(folder), old)
    print(f"\n48 kills, one save {1e3 * one_save:.0f} ms; folder state at the kill: {dict(states)}; loaded: {dict(seen)}")
    assert seen["old"] and seen["new"]


def test_a_damaged_bank_on_the_hub_is_refused_like_a_local_one(local_hub, tmp_path):
    bank = _bank(0, "hub")
    bank.save_pretrained(tmp_path / "good")
    local_hub.publish("org/damaged-dw", tmp_path / "good")
    assert _same(masterkey.load_master_filters("org/damaged-dw", cache_dir=tmp_path / "cache"), bank)
    data = bytearray((tmp_path / "good" / FILTERS_NAME).read_bytes())
    data[-3] ^= 0x10  # one bit of one kernel value
    (tmp_path / "good" / FILTERS_NAME).write_bytes(bytes(data))
    local_hub.publish("org/damaged-dw", tmp_path / "good", message="damaged")
    with pytest.raises(BankFormatError, match="does not match the SHA-256 recorded in config.json"):
        masterkey.load_master_filters("org/damaged-dw", cache_dir=tmp_path / "cache2")
    (tmp_path / "good" / CONFIG_NAME).write_text("[" * 100_000 + "]" * 100_000)
    local_hub.publish("org/damaged-dw", tmp_path / "good", message="deep")
    with pytest.raises(BankFormatError, match="nested deeper than 32 levels"):
        masterkey.load_master_filters("org/damaged-dw", cache_dir=tmp_path / "cache3")
