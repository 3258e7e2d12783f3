"""Average the trained weights of several checkpoints of one training run and export them as a weights folder.

Checkpoint averaging (as in stochastic weight averaging, Izmailov et al. 2018): the weights a run passes through
late in training, at a constant learning rate, scatter around a better point; their mean generalises better than
any one of them and does not depend on which checkpoint happened to be last. The shipped ``vst`` is such a mean.

    python scripts/average_checkpoints.py runs/vst/checkpoints/step_00010*.ckpt -o runs/vst/averaged
    brushwork stylize photo.jpg painting.jpg --model runs/vst/averaged -o painted.jpg
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from brushwork.errors import BrushworkError
from brushwork.training import average_checkpoints


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path, help="Lightning checkpoints (.ckpt) of one run")
    parser.add_argument("-o", "--output", type=Path, required=True, help="weights folder to write")
    args = parser.parse_args(argv)
    try:
        folder = average_checkpoints(args.checkpoints, args.output)
    except BrushworkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {folder} (the mean of {len(args.checkpoints)} checkpoints)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
