"""Build the tiny example models that examples/*.yaml merge (seconds, no downloads).

    python examples/build_tiny_models.py examples/models

writes base/, ft1/ and ft2/: a random tiny Llama and two "fine-tunes" of it (base plus small
random task vectors), each a real Hugging Face checkpoint with a char-level tokenizer.
"""

from __future__ import annotations

import sys
from pathlib import Path

from evomerge.zoo.tiny import make_family


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "examples/models")
    if all((out / name / "model.safetensors").exists() for name in ("base", "ft1", "ft2")):
        print(f"tiny models already in {out}")
        return
    paths = make_family("llama", out, n_finetunes=2, seed=0, layers=4, hidden=64)
    print("built", ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
