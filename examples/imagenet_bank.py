"""Build the real ImageNet master-key bank of tf_efficientnet_lite0, save it, load it back and inject it, frozen,
into a fresh tf_efficientnet_lite0 for a 10-class task, printing the injection report.

    python examples/imagenet_bank.py [--out outputs/tf_efficientnet_lite0-imagenet-dw]
"""

import argparse

import masterkey
from masterkey.sources import imagenet_lite0_bank

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="outputs/tf_efficientnet_lite0-imagenet-dw")
args = parser.parse_args()

bank = imagenet_lite0_bank()
bank.save_pretrained(args.out)
loaded = masterkey.load_master_filters(args.out)
model = masterkey.from_pretrained_filters("tf_efficientnet_lite0", loaded, num_classes=10)
print(f"{loaded}\nsaved to {args.out}\n")
print(model.masterkey_report)
