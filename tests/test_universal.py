"""The 8 universal keys, affine fitting and universal injection, on real timm models (random init, small)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from scipy.special import ive
from torch.nn.utils import parametrize

import masterkey
from masterkey.errors import FitError, InvalidFiltersError
from masterkey.universal_injection import KeyAffine
from masterkey.keys import IDEALIZED_SIGMAS, idealized_keys, learned_keys

ROOT = Path(__file__).resolve().parents[1]
# the published values, as handed to the project in shared/reference (beside the repo, or inside a checkout)
REFERENCE_CANDIDATES = [
    Path(os.environ.get("MASTERKEY_REFERENCE_DIR", ROOT / "shared" / "reference")),
    ROOT.parent / "shared" / "reference",
]
# |correlation| of each learned key with its idealized model at 7x7, measured (see test_idealized_keys_...):
# 0.837 0.939 0.910 0.906 0.946 0.954 0.987 0.997; the floor sits just under the smallest.
CORRELATION_FLOOR = 0.83


def _read_reference(path: Path) -> torch.Tensor:
    rows = [line.split() for line in path.read_text().splitlines() if line.strip() and not line.startswith("Filter")]
    return torch.tensor([[float(v) for v in row] for row in rows]).reshape(8, 7, 7)


def _affine_images(key_set: torch.Tensor, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, key_set.shape[0], (n,), generator=g)
    a = (torch.rand(n, generator=g) + 0.5) * torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    b = 0.3 * torch.randn(n, generator=g)
    return k, a, b, a[:, None, None] * key_set[k] + b[:, None, None]


# -- the keys ------------------------------------------------------------------------------------------------------
def test_learned_keys_equal_the_reference_file():
    reference = next(
        (p / "master_key_8_filters.txt" for p in REFERENCE_CANDIDATES if (p / "master_key_8_filters.txt").is_file()),
        None,
    )
    if reference is None:
        pytest.skip("shared/reference/master_key_8_filters.txt is not beside this checkout")
    assert torch.equal(learned_keys(), _read_reference(reference))


def test_learned_keys_are_the_published_filters():
    keys = learned_keys()
    assert keys.shape == (8, 7, 7)
    # published properties: mean 0, L2 norm 1, and the peaks listed with the values
    assert torch.allclose(keys.mean((1, 2)), torch.zeros(8), atol=1e-5)
    assert torch.allclose(keys.flatten(1).norm(dim=1), torch.ones(8), atol=1e-4)
    peaks = [(4, 3), (3, 4), (2, 3), (3, 2), (3, 2), (4, 3), (3, 3), (3, 3)]
    for k, (r, c) in enumerate(peaks):
        assert divmod(int(keys[k].argmax()), 7) == (r, c), f"key {k + 1}"
    assert keys[0, 4, 3].item() == pytest.approx(0.936427)
    assert keys[7, 3, 3].item() == pytest.approx(0.920885)


def test_idealized_keys_correlate_with_their_learned_counterparts():
    corr = (learned_keys() * idealized_keys(7)).sum((1, 2))
    print("learned vs idealized correlation per key:", [round(c, 3) for c in corr.tolist()])
    # keys 2 and 3 follow the sign convention of Gaussian derivatives, opposite to the learned ones
    assert (torch.sign(corr) == torch.tensor([1.0, -1, -1, 1, 1, 1, 1, 1])).all()
    assert (corr.abs() >= CORRELATION_FLOOR).all()
    # each learned key is closest to its own idealized model
    cross = torch.einsum("kij,lij->kl", learned_keys(), idealized_keys(7)).abs()
    assert cross.argmax(1).tolist() == list(range(8))


@pytest.mark.parametrize("size", [3, 5, 7, 9, 11])
def test_idealized_keys_are_normalized_at_any_odd_size(size):
    keys = idealized_keys(size)
    assert keys.shape == (8, size, size)
    assert torch.allclose(keys.mean((1, 2)), torch.zeros(8), atol=1e-6)
    assert torch.allclose(keys.flatten(1).norm(dim=1), torch.ones(8), atol=1e-5)
    # the centred derivatives are odd, the Gaussian and the DoG even
    assert torch.allclose(keys[4].flip(1), -keys[4], atol=1e-6)
    assert torch.allclose(keys[5].flip(0), -keys[5], atol=1e-6)
    for k in (6, 7):
        assert torch.allclose(keys[k].flip(0), keys[k], atol=1e-6) and torch.allclose(
            keys[k].flip(1), keys[k], atol=1e-6
        )


def test_idealized_gaussian_is_the_discrete_analogue_of_the_gaussian():
    n = np.arange(-2, 3)
    sx, sy = IDEALIZED_SIGMAS[7]
    t = np.outer(ive(n, sy**2), ive(n, sx**2))
    t = (t - t.mean()) / np.linalg.norm(t - t.mean())
    assert np.allclose(idealized_keys(5)[7].numpy(), t, atol=1e-6)
    # forward difference in x: key 4 at 5x5 has its positive lobe left of the centre, as the learned key 4
    assert idealized_keys(5)[3, 2, 1] > 0 > idealized_keys(5)[3, 2, 2]


@pytest.mark.parametrize("size", [0, 1, 4, 8])
def test_idealized_keys_refuse_even_or_tiny_sizes(size):
    with pytest.raises(FitError, match="odd sizes"):
        idealized_keys(size)


def test_universal_bank_round_trips_with_provenance(tmp_path):
    bank = masterkey.universal_bank("learned")
    assert torch.equal(bank["universal_keys"][:, 0], learned_keys())
    bank.save_pretrained(tmp_path / "learned")
    loaded = masterkey.load_master_filters(tmp_path / "learned")
    assert torch.equal(loaded["universal_keys"], bank["universal_keys"])
    assert loaded.config["source_license"] == "CC-BY-4.0"
    card = (tmp_path / "learned" / "README.md").read_text()
    assert "2509.11711" in card and "2509.12746" in card
    ideal = masterkey.universal_bank("idealized", size=9)
    assert ideal["universal_keys"].shape == (8, 1, 9, 9)
    with pytest.raises(FitError, match="learned keys are 7x7"):
        masterkey.universal_bank("learned", size=5)


# -- fitting -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("keys, size", [("learned", 7), ("idealized", 7), ("learned", 5), ("idealized", 3)])
def test_affine_image_plus_noise_is_fitted_back(keys, size):
    key_set = learned_keys() if (keys, size) == ("learned", 7) else idealized_keys(size)
    k, a, b, filters = _affine_images(key_set, 400)
    noisy = filters + 0.01 * torch.randn(filters.shape, generator=torch.Generator().manual_seed(1))
    fit = masterkey.fit_universal(noisy, keys=keys)
    layer = fit.layers[0]
    assert layer.key_set == f"{'learned' if (keys, size) == ('learned', 7) else 'idealized'}-{size}x{size}"
    assert torch.equal(fit.key, k)
    # the noise (std 0.01 per weight) projects onto a with std 0.01 and onto b with std 0.01 / size
    assert torch.allclose(fit.a, a, atol=0.05)
    assert torch.allclose(fit.b, b, atol=0.02)
    assert (fit.r2 > 0.95).all()


def test_fit_is_the_least_squares_optimum():
    filters = torch.randn(40, 5, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    fit = masterkey.fit_universal(filters)
    keys = idealized_keys(5).double().reshape(8, -1).numpy()
    for i, y in enumerate(filters.reshape(40, -1).numpy()):
        residuals = []
        for x in keys:
            design = np.stack([x, np.ones_like(x)], 1)
            coef, *_ = np.linalg.lstsq(design, y, rcond=None)
            residuals.append((np.sum((design @ coef - y) ** 2), coef))
        best = int(np.argmin([r for r, _ in residuals]))
        assert int(fit.key[i]) == best
        assert fit.a[i].item() == pytest.approx(residuals[best][1][0], abs=1e-4)
        assert fit.b[i].item() == pytest.approx(residuals[best][1][1], abs=1e-4)
        assert fit.r2[i].item() == pytest.approx(1 - residuals[best][0] / np.sum((y - y.mean()) ** 2), abs=1e-4)


def test_custom_keys_and_constant_filters():
    keys = torch.randn(3, 3, 3, generator=torch.Generator().manual_seed(0))
    filters = torch.stack([2 * keys[1] - 1, torch.full((3, 3), 0.25)])
    fit = masterkey.fit_universal(filters, keys=keys)
    assert fit.key.tolist() == [1, -1]  # a constant filter is b alone
    assert fit.a.tolist() == pytest.approx([2.0, 0.0], abs=1e-5)
    assert fit.b.tolist() == pytest.approx([-1.0, 0.25], abs=1e-5)
    assert fit.r2.tolist() == pytest.approx([1.0, 1.0], abs=1e-5)
    assert fit.key_usage().tolist() == [0, 1, 0]
    assert fit.summary()["constant_filters"] == 1


def test_bad_input_raises_fit_error():
    with pytest.raises(FitError, match="Nothing to fit"):
        masterkey.fit_universal(torch.empty(0, 7, 7))
    with pytest.raises(FitError, match="keys are 5x5"):
        masterkey.fit_universal(torch.randn(4, 7, 7), keys=idealized_keys(5))
    with pytest.raises(FitError, match="non-constant"):
        masterkey.fit_universal(torch.randn(4, 3, 3), keys=torch.ones(2, 3, 3))
    with pytest.raises(FitError, match="not a key set"):
        masterkey.fit_universal(torch.randn(4, 3, 3), keys="random")
    with pytest.raises(InvalidFiltersError, match="NaN"):
        masterkey.fit_universal(torch.full((2, 3, 3), float("nan")))
    bands = masterkey.FilterBank.from_tensors({"band": torch.randn(4, 1, 1, 9)})
    with pytest.raises(FitError, match="non-square or even"):
        masterkey.fit_universal(bands)


def test_non_square_kernels_are_skipped_and_counted():
    model = timm.create_model("inception_next_atto")
    bank = masterkey.extract_filters(model)
    bands = {spec.name: spec for spec in bank.specs if spec.kernel_size[0] != spec.kernel_size[1]}
    assert bands, "InceptionNeXt has 1xk / kx1 band convs"
    fit = masterkey.fit_universal(bank)
    assert set(fit.skipped) == set(bands)
    summary = fit.summary()
    assert summary["layers_skipped"] == len(bands)
    assert summary["filters_skipped"] == sum(s.out_channels for s in bands.values())
    assert summary["layers_fitted"] == len(bank) - len(bands)
    assert fit.num_filters == sum(s.out_channels for s in bank.specs if s.name not in bands)


def test_summary_shares_match_the_r2_values():
    bank = masterkey.extract_filters(timm.create_model("mobilenetv3_small_050"))
    fit = masterkey.fit_universal(bank)
    summary = fit.summary(thresholds=(0.5,))
    assert summary["filters"] == sum(s.out_channels for s in bank.specs)
    assert summary["share_r2_at_least"]["0.5"] == pytest.approx((fit.r2 >= 0.5).float().mean().item())
    for size, row in summary["by_kernel_size"].items():
        assert row["share_r2_at_least"]["0.5"] == pytest.approx(fit.share_above(0.5, kernel_size=int(size[0])))
    assert sum(summary["key_usage"]) + summary["constant_filters"] == summary["filters"]
    assert [row["name"] for row in fit.layer_summaries()] == [layer.name for layer in fit.layers]
    assert [tuple(row["stride"]) for row in fit.layer_summaries()] == [bank.spec(n).stride for n in bank.names]


# -- universal injection -------------------------------------------------------------------------------------------
def test_injection_without_source_follows_the_cyclic_rule():
    model = masterkey.inject_universal("convnext_atto", num_classes=5)
    convs = masterkey.find_depthwise_convs(model)
    for conv in convs:
        weight = conv.module.weight
        assert not weight.requires_grad
        expected = learned_keys()[torch.arange(weight.shape[0]) % 8]
        assert torch.equal(weight[:, 0], expected)
    report = model.masterkey_report
    assert len(report.injected) == len(convs)
    assert report.parameters.trainable < report.parameters.total


def test_injection_from_a_source_carries_key_a_and_b_across_architectures():
    g = torch.Generator().manual_seed(0)
    key_set = idealized_keys(3)
    layers, truth = {}, {}
    for name, channels in (("early", 16), ("late", 24)):
        k, a, b, filters = _affine_images(key_set, channels, seed=channels)
        layers[name] = filters[:, None] + 0.001 * torch.randn(channels, 1, 3, 3, generator=g)
        truth[name] = (k, a, b)
    source = masterkey.FilterBank.from_tensors(layers, source_model="synthetic")
    model = masterkey.inject_universal("convnext_atto", source=source, num_classes=5)
    convs = masterkey.find_depthwise_convs(model)
    fit = masterkey.fit_universal(masterkey.extract_filters(model))
    for conv, layer in zip(convs, fit.layers, strict=True):
        # every injected 7x7 kernel is exactly an affine image of one learned key
        assert layer.key_set == "learned-7x7" and (layer.r2 > 1 - 1e-5).all()
        name = "early" if conv.spec.relative_depth <= 0.5 else "late"
        k, a, b = truth[name]
        channels = torch.arange(conv.spec.out_channels) * len(k) // conv.spec.out_channels
        assert torch.equal(layer.key, k[channels])
        assert torch.allclose(layer.a, a[channels], atol=0.02)
        assert torch.allclose(layer.b, b[channels], atol=0.01)
    entry = model.masterkey_report.entries[0]
    assert entry.source == "early" and "channels 16->40 evenly spaced" in entry.transforms


def test_injection_skips_band_kernels():
    model = masterkey.inject_universal("inception_next_atto", keys="idealized", num_classes=5)
    report = model.masterkey_report
    assert report.skipped and all("kernel" in e.reason for e in report.skipped)
    for conv in masterkey.find_depthwise_convs(model):
        h, w = conv.spec.kernel_size
        assert conv.module.weight.requires_grad == (h != w)


def test_learnable_affine_keeps_exact_keys_and_exports_to_plain_timm():
    torch.manual_seed(0)
    model = masterkey.inject_universal("convnext_atto", learn_affine=True, num_classes=5)
    conv = masterkey.find_depthwise_convs(model)[0].module
    assert parametrize.is_parametrized(conv, "weight")
    affine = conv.parametrizations["weight"][0]
    assert isinstance(affine, KeyAffine) and affine.scale.requires_grad and affine.shift.requires_grad
    assert not conv.parametrizations["weight"].original.requires_grad

    # train a few steps: only the affine map of the kernels moves, the keys stay
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    assert not torch.allclose(affine.shift, torch.zeros_like(affine.shift))
    fit = masterkey.fit_universal(masterkey.extract_filters(model))
    assert (fit.r2 > 1 - 1e-4).all()
    assert torch.equal(fit.layers[0].key, torch.arange(conv.out_channels) % 8)

    model.eval()
    with torch.no_grad():
        before = model(x)
    masterkey.export_universal(model)
    assert not parametrize.is_parametrized(conv)
    with torch.no_grad():
        after = model(x)
    assert torch.allclose(before, after, atol=1e-6)
    plain = timm.create_model("convnext_atto", num_classes=5).eval()
    plain.load_state_dict(model.state_dict())  # strict: a plain timm model again
    with torch.no_grad():
        assert torch.allclose(plain(x), before, atol=1e-6)


def test_shift_only_and_export_on_a_batchnorm_model():
    source = masterkey.extract_filters(timm.create_model("mobilenetv3_small_050"))
    model = masterkey.inject_universal("mobilenetv3_small_050", source=source, learn_affine="shift")
    model.eval()
    for conv in masterkey.find_depthwise_convs(model):
        affine = conv.module.parametrizations["weight"][0]
        assert not affine.scale.requires_grad and affine.shift.requires_grad
    # same architecture: each conv takes its own source layer, channel for channel
    assert all(e.source == e.target for e in model.masterkey_report.entries)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        after = masterkey.export_universal(model)(x)
    assert torch.allclose(before, after, atol=1e-5)
    source_fit, target_fit = masterkey.fit_universal(source), masterkey.fit_universal(masterkey.extract_filters(model))
    assert torch.equal(source_fit.key.clamp(min=0), target_fit.key.clamp(min=0))
    assert torch.allclose(source_fit.b, target_fit.b, atol=1e-5)


def test_injection_rejects_bad_options():
    with pytest.raises(ValueError, match="learn_affine"):
        masterkey.inject_universal("convnext_atto", learn_affine="scale")
    with pytest.raises(FitError, match="not a key set"):
        masterkey.inject_universal("convnext_atto", keys="random")
    custom = masterkey.fit_universal(torch.randn(4, 7, 7), keys=torch.randn(3, 7, 7))
    with pytest.raises(FitError, match="custom keys"):
        masterkey.inject_universal("convnext_atto", source=custom)


def test_key_usage_and_key_share_count_constant_filters_nowhere():
    from masterkey.fitting import key_usage

    assert key_usage(torch.tensor([0, 0, 7, -1])).tolist() == [2, 0, 0, 0, 0, 0, 0, 1]
    fit = masterkey.fit_universal(torch.cat([idealized_keys(5)[[1, 1, 3]], torch.ones(1, 5, 5)]))
    assert fit.layers[0].key_share() == [0, 2 / 3, 0, 1 / 3, 0, 0, 0, 0]


def test_key_correlation_is_the_dot_product_of_the_unit_keys():
    from masterkey.keys import key_correlation

    corr = key_correlation()
    expected = (learned_keys() * idealized_keys(7)).reshape(8, -1).sum(1)
    assert corr == pytest.approx(expected.tolist()) and min(abs(c) for c in corr) > 0.8
