"""Fuzz the bank loader: seeded mutations of a real bank folder, each loaded, injected and saved again.

    python benchmarks/fuzz_banks.py [--cases 20000] [--seed 0] [--timeout 10]
    python benchmarks/fuzz_banks.py --seed 0 --case 1234 --verbose   # replay one case

The base bank is ``mobilenetv3_small_050`` (random init, 11 depthwise kernels) saved with ``save_pretrained``. Each
case copies it into a scratch folder, applies one mutation (damaged JSON: type swaps, nulls, huge / negative / zero /
NaN / Infinity / 1e999 numbers, deep nesting, entries that are not objects, removed / duplicated keys, wrong lengths,
damaged text; damaged files: truncation, bit flips in the safetensors header and body, integer / bool / float8
tensors, empty or misshapen tensors, NaN kernels; special files: a directory, a dangling symlink, a symlink loop, a
FIFO, ``/dev/zero``, a huge sparse file; leftovers of interrupted saves), then loads it with
``FilterBank.from_pretrained`` (every third case with ``masterkey.load_master_filters``). A bank that loads must be
valid (finite float32 tensors shaped like its manifest, a JSON config), may differ from the base only in what the
mutation legitimately changed (a JSON field, or the kernels of a file re-made with its SHA-256 updated), is injected
into a model (``strict=False``) and saved again over the mutated folder, which must then load the same bank and hold
no leftovers. Outcomes per mutation kind: loaded valid, typed error (a ``MasterKeyError``), other exception, hang
(over ``--timeout`` seconds), invalid (loaded but broken, or differing from the base where it must not).

The same generator runs in the test suite (``tests/test_bank_fuzz.py``, 2,000 cases).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from safetensors.torch import save as save_safetensors

import masterkey
from masterkey.bank import FilterBank
from masterkey.constants import CONFIG_NAME, FILTERS_NAME
from masterkey.errors import MasterKeyError

#: Outcome columns, in table order.
OUTCOMES = ("loaded valid", "typed error", "other exception", "hang", "invalid")
#: What a loaded bank may differ from the base in besides its fields: "values" (kernels of a re-made file),
#: "order" (kernel order), "*" (any config or manifest field, never the kernels: free-form text damage).
ANY_FIELD = "*"
ENTRY_FIELDS = ("name", "in_channels", "out_channels", "channel_multiplier", "kernel_size", "stride", "dilation",
                "index", "relative_depth", "stage")  # fmt: skip
TOP_FIELDS = ("format_version", "library_name", "source_model", "source_weights", "source_dataset", "source_license",
              "description", "extra", "num_kernels", "filters_sha256", "filters")  # fmt: skip
SPEC_FIELDS = ("in_channels", "out_channels", "kernel_size", "stride", "dilation", "index", "stage")


@dataclass
class Mutation:
    """One damaged bank: ``apply(folder)`` damages a fresh copy of the base bank in ``folder``."""

    kind: str
    detail: str
    apply: Callable[[Path], None]
    #: what a bank that still loads may differ in (config / manifest field names, "order", "values", "*")
    allowed: frozenset = frozenset()
    #: damage that must never load (a bit flip in the kernels, a file changed behind its recorded SHA-256)
    must_fail: bool = False


@dataclass
class Base:
    """The undamaged bank: its files' contents and the parsed pieces the mutations start from."""

    bank: FilterBank
    config: dict
    config_bytes: bytes
    filters_bytes: bytes
    tensors: dict
    header_end: int  # the tensor data of filters.safetensors starts here

    def write(self, folder: Path) -> None:
        (folder / CONFIG_NAME).write_bytes(self.config_bytes)
        (folder / FILTERS_NAME).write_bytes(self.filters_bytes)


@dataclass
class Report:
    """Outcome counts by mutation kind, and the first few cases of each bad outcome (to replay them)."""

    counts: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)
    seconds: float = 0.0
    cases: int = 0

    def by_kind(self) -> dict[str, Counter]:
        table: dict[str, Counter] = {}
        for (kind, outcome), n in sorted(self.counts.items()):
            table.setdefault(kind, Counter())[outcome] += n
        return table

    def table(self) -> str:
        width = max([len("mutation kind"), *(len(k) for k in self.by_kind())])
        lines = [f"| {'mutation kind':{width}} | " + " | ".join(OUTCOMES) + " |",
                 f"|{'-' * (width + 2)}|" + "|".join("-" * (len(o) + 2) for o in OUTCOMES) + "|"]  # fmt: skip
        total = Counter()
        for kind, row in self.by_kind().items():
            total.update(row)
            lines.append(f"| {kind:{width}} | " + " | ".join(f"{row[o]:>{len(o)}}" for o in OUTCOMES) + " |")
        lines.append(f"| {'total':{width}} | " + " | ".join(f"{total[o]:>{len(o)}}" for o in OUTCOMES) + " |")
        return "\n".join(lines)


# -- the base bank ---------------------------------------------------------------------------------------------------
def build_base(folder: Path) -> Base:
    """Extract and save the base bank (seeded random init, every optional config field filled) into ``folder``."""
    torch.manual_seed(0)
    model = timm.create_model("mobilenetv3_small_050")
    bank = masterkey.extract_filters(model, source_weights="random init (seed 0)", source_dataset="none",
                                     source_license="Apache-2.0", description="fuzz base", note="extra field")  # fmt: skip
    bank.save_pretrained(folder)
    filters_bytes = (folder / FILTERS_NAME).read_bytes()
    config_bytes = (folder / CONFIG_NAME).read_bytes()
    (header_len,) = struct.unpack("<Q", filters_bytes[:8])
    tensors = {name: t.clone() for name, t in bank.items()}
    return Base(bank=bank, config=json.loads(config_bytes), config_bytes=config_bytes, filters_bytes=filters_bytes,
                tensors=tensors, header_end=8 + header_len)  # fmt: skip


# -- JSON with what json.dumps cannot write: raw tokens (1e999, NaN, deep nesting) and repeated keys -------------------
class Raw(str):
    """Text written into the JSON as is."""


class Pairs(list):
    """A JSON object given as (key, value) pairs, so a key can repeat."""


def dumps(value) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Pairs):
        return "{" + ", ".join(f"{json.dumps(k)}: {dumps(v)}" for k, v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the mutations ---------------------------------------------------------------------------------------------------
WEIRD_VALUES = ["x", "", 0, 1, -1, 3.5, True, False, None, [], [1], [3, 3], {}, {"a": 1}, "3", 2**40]
NUMBERS = [0, -1, -7, 2, 1, 3.0, 1.5, -0.0, 1e-300, 2**31, 2**31 - 1, 2**63, 10**30, -(2**63), Raw("1e999"),
           Raw("-1e999"), Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1" * 5000), Raw("0.5"), Raw("1E2"),
           Raw("-0")]  # fmt: skip


def _target(rng: random.Random, config: dict) -> tuple[str, Callable[[object], None], Callable[[], None], object]:
    """A random field: (its name, set it, delete it, its value)."""
    if rng.random() < 0.7:
        entry = rng.choice(config["filters"])
        key = rng.choice(ENTRY_FIELDS)
        return key, lambda v: entry.__setitem__(key, v), lambda: entry.pop(key, None), entry.get(key)
    key = rng.choice(TOP_FIELDS)
    return key, lambda v: config.__setitem__(key, v), lambda: config.pop(key, None), config.get(key)


def _allowed(key: str) -> frozenset:
    # changing an index may reorder the kernels; relative depth and channel_multiplier are recomputed on load
    return frozenset({key, "order"} if key == "index" else {key})


def _json_mutation(rng: random.Random, base: Base) -> Mutation:
    config = json.loads(base.config_bytes)
    kind = rng.choice(["json-type-swap", "json-null", "json-number", "json-deep", "json-entry-not-object",
                       "json-filters-list", "json-remove-key", "json-duplicate-key", "json-wrong-length",
                       "json-string", "json-sha", "json-version", "json-harmless", "json-index"])  # fmt: skip
    key, put, delete, old = _target(rng, config)
    allowed = _allowed(key)
    if kind == "json-type-swap":
        new = rng.choice([v for v in WEIRD_VALUES if type(v) is not type(old)])
        put(new)
        detail = f"{key} = {new!r}"
    elif kind == "json-null":
        put(None)
        detail = f"{key} = null"
    elif kind == "json-number":
        key, put, delete, old = _target(rng, config)
        while key in ("name", "filters", "extra", "filters_sha256", "library_name") or key.startswith("source"):
            key, put, delete, old = _target(rng, config)
        allowed = _allowed(key)
        new = rng.choice(NUMBERS)
        if isinstance(old, list) and rng.random() < 0.5:  # one of the two sizes
            new = [old[0], new]
        put(new)
        detail = f"{key} = {str(new)[:40]}"
    elif kind == "json-deep":
        depth = rng.choice([31, 33, 100, 1000, 5000, 100_000])
        opener, closer = rng.choice([("[", "]"), ('{"a": ', "}")])
        put(Raw(opener * depth + "1" + closer * depth))
        detail = f"{key} nested {depth} deep"
    elif kind == "json-entry-not-object":
        i = rng.randrange(len(config["filters"]))
        new = rng.choice([None, 1, "x", [], [config["filters"][i]], True, Raw("1e999"), 2.5])
        config["filters"][i] = new
        detail, allowed = f"filters[{i}] = {str(new)[:40]}", frozenset()
    elif kind == "json-filters-list":
        choice = rng.choice(["null", "number", "string", "object", "empty", "drop", "repeat", "append", "reverse",
                             "huge"])  # fmt: skip
        entries = config["filters"]
        if choice == "drop":
            entries.pop(rng.randrange(len(entries)))
        elif choice == "repeat":
            entries.insert(rng.randrange(len(entries)), dict(rng.choice(entries)))
        elif choice == "append":
            entries.append({**entries[0], "name": "not.in.the.file", "index": len(entries)})
        elif choice == "reverse":  # order in the list does not matter: "index" orders the kernels
            entries.reverse()
        elif choice == "huge":  # more entries than masterkey reads, compactly written
            config["filters"] = Raw("[" + ",".join(["{}"] * 100_001) + "]")
        else:
            config["filters"] = {"null": None, "number": 3, "string": "filters", "object": {"0": entries[0]},
                                 "empty": []}[choice]  # fmt: skip
        detail, allowed = f"filters: {choice}", frozenset()
    elif kind == "json-remove-key":
        delete()
        detail = f"remove {key}"
    elif kind == "json-duplicate-key":
        if rng.random() < 0.7:
            obj = rng.choice(config["filters"])
            owner = config["filters"]
            k = rng.choice(list(obj))
        else:
            obj, owner, k = config, None, rng.choice([k for k in config if k != "filters"])
        pairs = Pairs(obj.items())
        pos = next(i for i, (name, _) in enumerate(pairs) if name == k)
        bogus = rng.choice(WEIRD_VALUES)
        pairs.insert(pos + rng.choice([0, 1]), (k, bogus))  # before or after the real one: JSON keeps the last
        if owner is None:
            config = pairs
        else:
            owner[owner.index(obj)] = pairs
        detail, allowed = f"{k} twice ({bogus!r})", _allowed(k)
    elif kind == "json-wrong-length":
        entry = rng.choice(config["filters"])
        k = rng.choice(["kernel_size", "stride", "dilation"])
        new = rng.choice([[], [3], [3, 3, 3], [[3, 3]], [3, "3"], [3, 0], [1, 1, 1, 1]])
        entry[k] = new
        detail, allowed = f"{k} = {new}", frozenset({k})
    elif kind == "json-string":
        entry = rng.choice(config["filters"])
        k = rng.choice(["name", "name", "source_model", "description", "library_name", "source_license"])
        new = rng.choice(["", "\x00", "a\x00b", "x" * 10_000, "stages.\u00b2.conv", "../../etc/passwd", "\ud800",
                          config["filters"][0]["name"], entry["name"] + " ", "\u202e", "ünïcødé"])  # fmt: skip
        (entry if k == "name" else config)[k] = new
        detail, allowed = f"{k} = {new[:20]!r}", frozenset({k})
    elif kind == "json-sha":
        digest = config["filters_sha256"]
        choice = rng.choice(["other", "upper", "short", "int", "null", "remove", "same"])
        new = {"other": _sha(b"other"), "upper": digest.upper(), "short": digest[:-1], "int": 12345,
               "null": None, "same": digest}.get(choice)  # fmt: skip
        if choice == "remove":
            config.pop("filters_sha256")
        else:
            config["filters_sha256"] = new
        detail, allowed = f"filters_sha256: {choice}", frozenset()
    elif kind == "json-version":
        new = rng.choice([0, 2, -1, "1", 1.0, True, None, 2**70, Raw("1e999"), "remove"])
        if new == "remove":
            config.pop("format_version")
        else:
            config["format_version"] = new
        detail, allowed = f"format_version = {new!r}", frozenset()
    elif kind == "json-harmless":
        entry = rng.choice(config["filters"])
        choice = rng.choice(["depth", "multiplier", "num_kernels", "extra", "unknown", "description", "shuffle",
                             "stage"])  # fmt: skip
        if choice == "depth":
            entry["relative_depth"] = rng.choice([0, 1, 0.5, rng.random()])
        elif choice == "multiplier":
            entry.pop("channel_multiplier")
        elif choice == "num_kernels":
            config.pop("num_kernels")
        elif choice == "extra":
            config["extra"] = {"anything": [1, {"b": None}], "s": "t"}
        elif choice == "unknown":
            entry["future_field"] = {"x": [1, 2]}
            config["future_top"] = "y"
        elif choice == "description":
            config["description"] = "edited by hand"
        elif choice == "shuffle":
            rng.shuffle(config["filters"])
        else:
            entry["stage"] = rng.choice([None, 0, 7])
        detail = f"harmless: {choice}"
        allowed = frozenset({"extra", "description", "stage", "future_top", "num_kernels"})
    else:  # json-index: two kernels swap places
        a, b = rng.sample(range(len(config["filters"])), 2)
        fa, fb = config["filters"][a], config["filters"][b]
        fa["index"], fb["index"] = fb["index"], fa["index"]
        detail, allowed = f"swap index of filters[{a}] and filters[{b}]", frozenset({"index", "order"})
    text = dumps(config).encode("utf-8", "surrogatepass")

    def apply(folder: Path) -> None:
        (folder / CONFIG_NAME).write_bytes(text)

    return Mutation(kind, detail, apply, allowed)


def _json_text_mutation(rng: random.Random, base: Base) -> Mutation:
    data = bytearray(base.config_bytes)
    choice = rng.choice(["truncate", "flip", "bad utf-8", "bom", "empty", "whitespace", "trailing", "sparse huge",
                         "insert"])  # fmt: skip
    sparse = 0
    if choice == "truncate":
        cut = rng.randrange(len(data))
        data = data[:cut]
        choice = f"truncate at {cut}"
    elif choice == "flip":
        i, bit = rng.randrange(len(data)), rng.randrange(8)
        data[i] ^= 1 << bit
        choice = f"flip bit {bit} of byte {i}"
    elif choice == "bad utf-8":
        i = rng.randrange(len(data))
        data[i:i] = b"\xff\xfe\xc3"
    elif choice == "bom":
        data[:0] = b"\xef\xbb\xbf"
    elif choice == "empty":
        data = bytearray()
    elif choice == "whitespace":
        data = bytearray(b" \n\t" * 1000)
    elif choice == "trailing":
        data += b" {}"
    elif choice == "insert":
        i = rng.randrange(len(data))
        data[i:i] = rng.choice([b",", b"]", b"}", b'"', b"\\", b"\x00"])
    else:
        sparse = rng.choice([16 * 2**20 + 1, 2**34])

    def apply(folder: Path) -> None:
        (folder / CONFIG_NAME).write_bytes(bytes(data))
        if sparse:
            os.truncate(folder / CONFIG_NAME, sparse)  # a hole: huge, yet costs nothing to write

    return Mutation("json-text", choice, apply, frozenset({ANY_FIELD}))


def _remade(base: Base, tensors: dict, *, update_sha: bool, metadata=None) -> Callable[[Path], None]:
    """A filters.safetensors written from ``tensors``; with ``update_sha`` config.json records its hash."""
    data = save_safetensors(tensors, metadata=metadata or {"format": "pt"})
    config = json.loads(base.config_bytes)
    if update_sha:
        config["filters_sha256"] = _sha(data)
    text = json.dumps(config, indent=2).encode()

    def apply(folder: Path) -> None:
        (folder / FILTERS_NAME).write_bytes(data)
        (folder / CONFIG_NAME).write_bytes(text)

    return apply


def _file_mutation(rng: random.Random, base: Base) -> Mutation:
    kind = rng.choice(["filters-truncate", "filters-flip-header", "filters-flip-body", "filters-flip-body",
                       "filters-append", "filters-dtype", "filters-shape", "filters-tensors", "filters-nan",
                       "filters-metadata"])  # fmt: skip
    data = bytearray(base.filters_bytes)
    names = list(base.tensors)
    name = rng.choice(names)
    update_sha = rng.random() < 0.7
    tag = "sha updated" if update_sha else "sha stale"
    if kind == "filters-truncate":
        cut = rng.choice([0, 4, 8, rng.randrange(base.header_end), rng.randrange(len(data))])
        data = data[:cut]
        detail, must_fail = f"cut at {cut}", True
    elif kind == "filters-flip-header":
        i, bit = rng.randrange(base.header_end), rng.randrange(8)
        data[i] ^= 1 << bit
        detail, must_fail = f"flip bit {bit} of byte {i}", True
    elif kind == "filters-flip-body":
        i, bit = rng.randrange(base.header_end, len(data)), rng.randrange(8)
        data[i] ^= 1 << bit
        detail, must_fail = f"flip bit {bit} of byte {i}", True
    elif kind == "filters-append":
        data += bytes(rng.randrange(256) for _ in range(rng.choice([1, 7, 100])))
        detail, must_fail = f"{len(data) - len(base.filters_bytes)} bytes appended", True
    else:
        tensors = {n: t.clone() for n, t in base.tensors.items()}
        allowed = frozenset()
        if kind == "filters-dtype":
            dtype = rng.choice([torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool,
                                torch.float16, torch.bfloat16, torch.float64, torch.float8_e4m3fn])  # fmt: skip
            tensors[name] = tensors[name].to(dtype)
            if dtype in (torch.float16, torch.bfloat16):
                allowed = frozenset({"values"})  # a re-made file of rounded kernels, with its hash: a new bank
            detail = f"{name} as {dtype}"
        elif kind == "filters-shape":
            t = tensors[name]
            shape = rng.choice([(0, 1, 3, 3), (t.shape[0], 1, 0, 0), (0,), tuple(t.shape[1:]), (1, *t.shape),
                                (t.shape[0], 2, *t.shape[2:]), (t.shape[0] * t.shape[2] * t.shape[3],)])  # fmt: skip
            tensors[name] = torch.zeros(shape)
            detail = f"{name} shaped {shape}"
        elif kind == "filters-tensors":
            choice = rng.choice(["missing", "extra", "renamed"])
            if choice in ("missing", "renamed"):
                t = tensors.pop(name)
                if choice == "renamed":
                    tensors[name + ".x"] = t
            else:
                tensors["not.in.manifest"] = torch.zeros(1, 1, 3, 3)
            detail = f"{choice} {name}"
        elif kind == "filters-nan":
            t = tensors[name].reshape(-1)
            t[rng.randrange(t.numel())] = rng.choice([float("nan"), float("inf"), float("-inf")])
            detail = f"non-finite value in {name}"
        else:
            detail = "other metadata"
            apply = _remade(base, tensors, update_sha=update_sha, metadata={"format": "pt", "who": "fuzz"})
            return Mutation(kind, f"{detail} ({tag})", apply, frozenset(), must_fail=not update_sha)
        apply = _remade(base, tensors, update_sha=update_sha)
        # a changed file behind a stale hash never loads; with its hash updated, only float kernels load
        loads = update_sha and kind == "filters-dtype" and tensors[name].dtype in (torch.float16, torch.bfloat16,
                                                                                   torch.float64)  # fmt: skip
        return Mutation(kind, f"{detail} ({tag})", apply, allowed, must_fail=not loads)
    payload = bytes(data)

    def write(folder: Path) -> None:
        (folder / FILTERS_NAME).write_bytes(payload)

    return Mutation(kind, detail, write, frozenset(), must_fail=must_fail)


def _special_file_mutation(rng: random.Random, base: Base) -> Mutation:
    target = rng.choice([CONFIG_NAME, FILTERS_NAME])
    other = FILTERS_NAME if target == CONFIG_NAME else CONFIG_NAME
    choice = rng.choice(["directory", "dangling symlink", "symlink loop", "self symlink", "fifo", "/dev/zero",
                         "/dev/null", "missing", "empty", "sparse huge", "symlink to the other file",
                         "symlink to a copy", "symlink to a folder"])  # fmt: skip

    def apply(folder: Path) -> None:
        path = folder / target
        content = path.read_bytes()
        path.unlink()
        if choice == "directory":
            path.mkdir()
            (path / "x").write_bytes(content)
        elif choice == "dangling symlink":
            path.symlink_to(folder / "nowhere")
        elif choice == "symlink loop":
            path.symlink_to(folder / "loop-b")
            (folder / "loop-b").symlink_to(path)
        elif choice == "self symlink":
            path.symlink_to(path)
        elif choice == "fifo":
            os.mkfifo(path)
        elif choice in ("/dev/zero", "/dev/null"):
            path.symlink_to(choice)
        elif choice == "empty":
            path.write_bytes(b"")
        elif choice == "sparse huge":
            path.write_bytes(content)
            os.truncate(path, 2**34 if target == FILTERS_NAME else 2**25)
        elif choice == "symlink to the other file":
            path.symlink_to(folder / other)
        elif choice == "symlink to a copy":  # legitimate: loads the same bank
            (folder / "elsewhere").mkdir()
            (folder / "elsewhere" / target).write_bytes(content)
            path.symlink_to(folder / "elsewhere" / target)
        elif choice == "symlink to a folder":
            path.symlink_to(folder)

    return Mutation("special-file", f"{target}: {choice}", apply, frozenset())


def _leftover_mutation(rng: random.Random, base: Base) -> Mutation:
    """What interrupted saves leave, and what looks like it: the pending folder a save commits before swapping."""
    choice = rng.choice(["staging folder", "pending copy", "pending config only", "pending filters only",
                         "pending damaged config", "pending damaged filters", "pending is a file",
                         "pending empty", "pending fifo"])  # fmt: skip

    def apply(folder: Path) -> None:
        if choice == "staging folder":
            stale = folder / ".masterkey-save-0123456789abcdef"
            stale.mkdir()
            (stale / CONFIG_NAME).write_bytes(b"{half")
            return
        pending = folder / ".masterkey-pending"
        if choice == "pending is a file":
            pending.write_bytes(b"x")
            return
        pending.mkdir()
        if choice in ("pending copy", "pending config only"):
            (pending / CONFIG_NAME).write_bytes(base.config_bytes)
        if choice in ("pending copy", "pending filters only"):
            (pending / FILTERS_NAME).write_bytes(base.filters_bytes)
        if choice == "pending damaged config":
            (pending / CONFIG_NAME).write_bytes(base.config_bytes[:100])
        if choice == "pending damaged filters":
            (pending / FILTERS_NAME).write_bytes(base.filters_bytes[:-1] + bytes([base.filters_bytes[-1] ^ 0xFF]))
        if choice == "pending fifo":
            os.mkfifo(pending / CONFIG_NAME)

    must_fail = "damaged" in choice or "fifo" in choice
    return Mutation("leftovers", choice, apply, frozenset(), must_fail=must_fail)


#: Mutation families and their weights.
FAMILIES = [(_json_mutation, 45), (_json_text_mutation, 8), (_file_mutation, 30), (_special_file_mutation, 10),
            (_leftover_mutation, 7)]  # fmt: skip


def mutation(seed: int, case: int, base: Base) -> Mutation:
    """Case ``case`` of the run seeded ``seed``: the same mutation every time (replay one with ``--case``)."""
    rng = random.Random(f"{seed}:{case}")
    family = rng.choices([f for f, _ in FAMILIES], weights=[w for _, w in FAMILIES])[0]
    return family(rng, base)


# -- running one case ------------------------------------------------------------------------------------------------
class Hang(Exception):
    """A case ran past its time limit."""


def _on_alarm(signum, frame):
    raise Hang()


def bank_diff(a: FilterBank, b: FilterBank) -> set[str]:
    """What differs between two banks: "names", "values", "order", spec fields, top-level config fields."""
    diff = set()
    if set(a.names) != set(b.names):
        return {"names"}
    if any(not torch.equal(a[n], b[n]) for n in a.names):
        diff.add("values")
    if a.names != b.names:
        diff.add("order")
    for n in a.names:
        diff.update(f for f in SPEC_FIELDS if getattr(a.spec(n), f) != getattr(b.spec(n), f))
    ca = {k: v for k, v in a.config.items() if k != "filters"}
    cb = {k: v for k, v in b.config.items() if k != "filters"}
    diff.update(k for k in ca.keys() | cb.keys() if ca.get(k, diff) != cb.get(k, diff))
    return diff


def check_valid(bank: FilterBank) -> str | None:
    """Why a loaded bank is broken, or None when it is a valid bank."""
    if not len(bank) or set(bank.names) != {s.name for s in bank.specs}:
        return "names and specs disagree"
    for spec in bank.specs:
        t = bank[spec.name]
        if t.dtype != torch.float32 or tuple(t.shape) != spec.shape or not torch.isfinite(t).all():
            return f"kernel {spec.name!r}: {t.dtype}, {tuple(t.shape)} vs {spec.shape}"
    json.dumps(bank.config, allow_nan=False)
    return None


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".masterkey-"))


def run_case(m: Mutation, base: Base, folder: Path, model: torch.nn.Module, *, via_hub_api: bool,
             timeout: float) -> tuple[str, str]:  # fmt: skip
    """(outcome, detail) of one mutation applied to a fresh copy of the base bank in ``folder``."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    base.write(folder)
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        m.apply(folder)
        load = masterkey.load_master_filters if via_hub_api else FilterBank.from_pretrained
        try:
            bank = load(str(folder))
        except MasterKeyError as e:
            return "typed error", f"{type(e).__name__}: {str(e)[:200]}"
        if m.must_fail:
            return "invalid", "loaded damage that must be refused"
        broken = check_valid(bank)
        if broken:
            return "invalid", broken
        diff = bank_diff(bank, base.bank)
        if ANY_FIELD in m.allowed:
            diff.discard("order")
            diff = {d for d in diff if d in ("values", "names")}
        if not diff <= m.allowed:
            return "invalid", f"differs from the base in {sorted(diff - m.allowed)}"
        try:
            masterkey.from_pretrained_filters(model, bank, strict=False)
        except MasterKeyError:
            pass  # a typed refusal to inject is a fine outcome (the bank may not fit this model)
        bank.save_pretrained(folder)
        again = FilterBank.from_pretrained(folder)
        if bank_diff(again, bank):
            return "invalid", f"saved again, it loads differently: {sorted(bank_diff(again, bank))}"
        if _leftovers(folder):
            return "invalid", f"leftovers after a save: {_leftovers(folder)}"
        return "loaded valid", ""
    except Hang:
        return "hang", f"over {timeout} s"
    except MasterKeyError as e:  # from injecting or saving a loaded bank: not a loader outcome, but typed
        return "typed error", f"after loading: {type(e).__name__}: {str(e)[:200]}"
    except Exception as e:  # noqa: BLE001 - counting exactly these is the point
        return "other exception", f"{type(e).__name__}: {str(e)[:200]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run(cases: int, *, seed: int = 0, timeout: float = 10.0, workdir: Path | None = None, only: int | None = None,
        verbose: bool = False) -> Report:  # fmt: skip
    """Run ``cases`` seeded mutations (or only case ``only``) and count the outcomes."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        base = build_base(Path(tmp) / "base")
        torch.manual_seed(1)
        model = timm.create_model("mobilenetv3_small_050")
        report = Report()
        start = time.perf_counter()
        for case in [only] if only is not None else range(cases):
            m = mutation(seed, case, base)
            outcome, detail = run_case(m, base, Path(tmp) / "case", model, via_hub_api=case % 3 == 2, timeout=timeout)
            report.counts[m.kind, outcome] += 1
            if verbose or (outcome not in ("loaded valid", "typed error") and len(report.examples) < 50):
                report.examples.append((case, m.kind, m.detail, outcome, detail))
                if verbose:
                    print(f"case {case}: {m.kind} [{m.detail}] -> {outcome} {detail}")
        report.seconds = time.perf_counter() - start
        report.cases = cases if only is None else 1
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds a case may take before it counts as a hang")
    parser.add_argument("--case", type=int, default=None, help="replay only this case")
    parser.add_argument("--verbose", action="store_true", help="print every case")
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = run(args.cases, seed=args.seed, timeout=args.timeout, only=args.case, verbose=args.verbose)
    print(f"masterkey {masterkey.__version__}, torch {torch.__version__}, Python {sys.version.split()[0]}; "
          f"seed {args.seed}, {report.cases:,} cases in {report.seconds:.1f} s "
          f"({1e3 * report.seconds / max(report.cases, 1):.1f} ms per case)\n")  # fmt: skip
    print(report.table())
    bad = [e for e in report.examples if e[3] not in ("loaded valid", "typed error")]
    for case, kind, detail, outcome, why in bad[:20]:
        print(f"\ncase {case} ({kind}: {detail}): {outcome}: {why}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
