"""Build the three held-out evaluation sets the model cards and docs/TRAINING.md quote, from the evaluation images.

Each set is 10 photos x 5 paintings that no training folder holds: set ``a`` (4 `ai-benchmark` classification
photos, 6 COCO val2017; La Muse, Antimonocromatismo, Asheville, Contrast of Forms, one WikiArt Art Nouveau
painting) is the harder one; set ``b`` (4 `ai-benchmark` street photos, 6 other COCO val2017; two high-resolution
paintings, three WikiArt thumbnails) is where the official MicroAST measures about what the issue's held-out pairs
gave it (style ratio 31, SSIM 0.57); set ``c`` (10 classic test photos: cities, a boat, flowers, two portraits; two
high-resolution paintings, three WikiArt thumbnails) was put together after every recipe was chosen, as a last
check of choices made on the other two. The files are copied, so the sets stay valid if the source moves.

    python scripts/heldout_sets.py data/eval -o heldout
    brushwork eval heldout/a/content heldout/a/style --content-size 384 --style-size 384 --model vst -o eval-a
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

#: set -> (photos in ``content/``, paintings in ``style/``), file names in the evaluation folder.
SETS = {
    "a": (["aib_cls_12.jpg", "aib_cls_26.jpg", "aib_cls_49.jpg", "aib_cls_65.jpg",
           *(f"coco_val2017_{n:012d}.jpg" for n in (885, 1532, 1675, 2685, 6213, 6614))],
          ["antimonocromatismo.jpg", "asheville.jpg", "contrast_of_forms.jpg", "la_muse.jpg",
           "wikiart_c0_art_nouveau_modern_1347.jpg"]),
    "b": (["aib_enh_3.jpg", "aib_enh_49.jpg", "aib_enh_55.jpg", "aib_enh_77.jpg",
           *(f"coco_val2017_{n:012d}.jpg" for n in (6771, 7511, 8532, 9914, 10764, 11197))],
          ["the_resevoir_at_poitiers.jpg", "wikiart_c2_expressionism_3709.jpg", "wikiart_c3_impressionism_6095.jpg",
           "wikiart_c5_romanticism_3899.jpg", "woman_with_hat_matisse.jpg"]),
    "c": (["avril.jpg", "blonde_girl.jpg", "chicago.jpg", "cornell.jpg", "flowers.jpg", "golden_gate.jpg",
           "lenna.jpg", "modern.jpg", "newyork.jpg", "sailboat.jpg"],
          ["en_campo_gris.jpg", "scene_de_rue.jpg", "wikiart_c1_baroque_3651.jpg",
           "wikiart_c4_post_impressionism_3249.jpg", "wikiart_c6_symbolism_2575.jpg"]),
}


def build(eval_dir: Path, out_dir: Path) -> list[Path]:
    """Copy each set's files into ``out_dir/<set>/{content,style}``; nothing is written if any file is missing."""
    plan = [(eval_dir / role / name, out_dir / key / role / name)
            for key, (photos, paintings) in SETS.items()
            for role, names in (("content", photos), ("style", paintings)) for name in names]
    missing = [str(source) for source, _ in plan if not source.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} evaluation image(s) missing, first {missing[0]}")
    for source, target in plan:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return sorted({target.parent.parent for _, target in plan})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_dir", type=Path, help="the evaluation folder, with content/ and style/")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder to write the sets into")
    args = parser.parse_args(argv)
    try:
        folders = build(args.eval_dir, args.output)
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("wrote " + ", ".join(f"{folder} (10 photos x 5 paintings)" for folder in folders))
    return 0


if __name__ == "__main__":
    sys.exit(main())
