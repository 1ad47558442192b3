"""Print every operator (name.overload) this torch registers, with torchvision's: run in the image stack's venv
(.venv-image/bin/python scripts/oldest_torch_operators.py > mar_builder/model/torch_2.4.0_operators.txt).

Kept to Python 3.9 and to torch alone: it runs in the image stack, where mar_builder is not installed.
"""

import torch
import torchvision  # noqa: F401 (registers torchvision's operators, as the handler's workers import it)


def main() -> None:
    names = {f"{s.name}.{s.overload_name}" if s.overload_name else s.name for s in torch._C._jit_get_all_schemas()}
    versions = f"torch {torch.__version__} with torchvision {torchvision.__version__}"
    print(f"# Operators of {versions}: name.overload, a line.")
    print("# Written by scripts/oldest_torch_operators.py in the image stack's venv (make image-venv).")
    for name in sorted(names):
        print(name)


if __name__ == "__main__":
    main()
