"""Transfer training with frozen master-key filters, on any `datasets` image-classification dataset.

    accelerate launch examples/transfer.py            # the offline demo: ImageNet lite0 filters vs from scratch
    python examples/transfer.py --help                # every option (they follow transformers' no_trainer script)
    accelerate launch examples/transfer.py --model convnext_atto --filters org/bank --mapping depth \
        --dataset_name beans

Everything happens in masterkey.training; this script only hands it the command line.
"""

import os
import sys

# Idle OpenMP threads sleep instead of spinning: on a CPU shared with other jobs, spinning threads wait on each other
# and training slows down many times over. Set before torch loads; an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from masterkey.training import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
