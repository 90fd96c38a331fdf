"""The bank loader under 2,000 seeded mutations of a real bank folder: every outcome is a valid bank or a typed error.

The mutation generator and the case runner live in ``benchmarks/fuzz_banks.py`` (which runs 20,000 cases and prints
the table of outcomes); this test runs the first 2,000 cases of seed 0. Replay one with
``python benchmarks/fuzz_banks.py --seed 0 --case N --verbose``.
"""

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_banks.py"
_SPEC = importlib.util.spec_from_file_location("fuzz_banks", _PATH)
fuzz_banks = importlib.util.module_from_spec(_SPEC)
sys.modules["fuzz_banks"] = fuzz_banks  # dataclasses look their module up by name
_SPEC.loader.exec_module(fuzz_banks)

CASES = 2_000
#: seconds one case may take (load, inject, save again) before it counts as a hang
TIMEOUT = 10


def test_every_damaged_bank_loads_as_a_valid_bank_or_raises_a_typed_error_in_time(tmp_path):
    report = fuzz_banks.run(CASES, seed=0, timeout=TIMEOUT, workdir=tmp_path)
    print(f"\n{CASES} mutations in {report.seconds:.1f} s\n{report.table()}")
    table = report.by_kind()
    assert sum(sum(row.values()) for row in table.values()) == CASES
    # every outcome is a valid bank (equal to the base but for what the mutation legitimately changed) or a
    # MasterKeyError; "invalid" also counts damage that loaded although it must be refused
    bad = [example for example in report.examples if example[3] not in ("loaded valid", "typed error")]
    assert not bad, "\n".join(f"case {c} ({kind}: {detail}): {outcome}: {why}" for c, kind, detail, outcome, why in bad)
    # a bit flip in the kernels never loads: the SHA-256 recorded in config.json catches what parses
    flips = table["filters-flip-body"]
    assert flips["typed error"] >= 100 and flips["loaded valid"] == 0
    # every kind of mutation ran, and both outcomes occur
    assert len(table) == 26 and all(sum(row.values()) >= 10 for row in table.values()), {
        k: sum(r.values()) for k, r in table.items()
    }
    total = sum(table.values(), start=type(flips)())
    assert total["loaded valid"] > 0 and total["typed error"] > 0
