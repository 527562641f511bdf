"""Regenerates the pictures of the Gallery page (docs/gallery.rst) from the examples.

Each example runs with its own defaults (or the budget listed below) into a
temporary folder; the pictures the gallery shows are copied to
docs/_static/gallery/ under the example's name::

    python docs/gallery.py            # all of them, a few minutes on a laptop CPU
    python docs/gallery.py vae_digits # just one
"""

import argparse
import runpy
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "docs" / "_static" / "gallery"

#: example -> (extra arguments, pictures it writes that the gallery shows)
GALLERY = {
    "vae_digits": (
        ["--epochs", "300", "--num-samples", "100"],
        ["samples.png", "reconstructions.png", "traversal.png", "interpolation.png", "latent.png"],
    ),
    "cvae_digits_classes": (["--epochs", "60"], ["classes.png"]),
    "cvae_quadrants": (["--epochs", "40", "--observed", "1"], ["completions_q1.png"]),
    "ae_digits": ([], ["ae_filters.png"]),
    "denoising_ae_digits": ([], ["dae_vector_field.png", "dae_filters.png"]),
    "sparse_ae_digits": (["--penalty", "kl"], ["sparse_ae_kl_filters.png"]),
    "ksparse_ae_digits": ([], ["ksparse_ae_filters.png"]),
    "contractive_ae_digits": ([], ["contractive_ae_filters.png"]),
}


def regenerate(name: str, work: Path) -> list:
    args, pictures = GALLERY[name]
    out = work / name
    sys.argv = [name, *args, "--out", str(out)]
    runpy.run_path(str(ROOT / "examples" / f"{name}.py"), run_name="__main__")
    written = []
    for picture in pictures:
        target = STATIC / f"{name}-{picture}"
        shutil.copyfile(out / picture, target)
        written.append(target)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", help=f"examples to redo (default: all of {list(GALLERY)})"
    )
    names = parser.parse_args(argv).names or list(GALLERY)
    unknown = [n for n in names if n not in GALLERY]
    if unknown:
        parser.error(f"unknown examples {unknown}; known: {list(GALLERY)}")
    STATIC.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        for name in names:
            for path in regenerate(name, Path(work)):
                print("wrote", path.relative_to(ROOT))


if __name__ == "__main__":
    main()
