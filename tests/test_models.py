"""Saving and sharing an injected model in timm's Hub layout: timm and transformers load it, the card says which
filters are frozen and where they came from."""

from __future__ import annotations

import json

import timm
import torch

import masterkey


def test_an_injected_model_saves_loads_with_timm_and_transformers_and_says_what_is_frozen(tmp_path):
    from huggingface_hub import ModelCard
    from transformers import pipeline

    model = masterkey.from_pretrained_filters("tf_efficientnet_lite0", "imagenet-lite0", num_classes=3).eval()
    model = model.to(memory_format=torch.channels_last)  # saved in the ordinary layout whatever it trained in
    folder = masterkey.save_model(model, tmp_path / "lite0-frozen", label_names=["a", "b", "c"])
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)
    config = json.loads((folder / "config.json").read_text())
    assert config["label_names"] == ["a", "b", "c"] and "num_classes" not in config.get("model_args", {})
    card = ModelCard.load(folder / "README.md")
    assert "16 of 16 depthwise convolutions hold filters from FilterBank(tf_efficientnet_lite0" in card.text
    assert "frozen" in card.text and f"local-dir:./{folder.name}" in card.text and str(tmp_path) not in card.text
    classifier = pipeline("image-classification", model=str(folder))
    from PIL import Image

    predictions = classifier(Image.new("RGB", (64, 64), "white"))
    assert {p["label"] for p in predictions} <= {"a", "b", "c"}
