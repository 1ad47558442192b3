"""Class names for your own model: read from a text file, a JSON list, an index_to_name.json or an ImageFolder tree."""

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Sequence

from ..errors import ClassNamesError

logger = logging.getLogger(__name__)

SHOWN_NAMES = 3  # the build log lists this many class names from each end


def read_class_names(path: Path) -> List[str]:
    """Names in output order from `path`: one name per line, a JSON list, or a {"0": "name"} object.

    A file whose name ends in .json must be JSON; any other file is read as JSON when it parses as
    a list or an object, and otherwise as text. TorchServe-style values such as
    `["n01440764", "tench"]` give their last element, as TorchServe itself does.
    """
    path = Path(path)
    text = _read_text(path)
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" or stripped.startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if path.suffix.lower() == ".json":
                raise ClassNamesError(f"class names: {path} is not valid JSON: {e}") from e
        else:
            return _from_json(data, path)
    return _from_lines(text, path)


def class_names_from_dir(directory: Path) -> List[str]:
    """The sorted subfolder names of `directory`, numbered exactly as torchvision's ImageFolder numbers them."""
    directory = Path(directory)
    if not directory.exists():
        raise ClassNamesError(f"class names: {directory} does not exist")
    if not directory.is_dir():
        raise ClassNamesError(f"class names: {directory} is not a directory")
    from torchvision.datasets.folder import find_classes

    try:
        names, _ = find_classes(str(directory))
    except FileNotFoundError as e:
        raise ClassNamesError(f"class names: {directory} has no subfolders (one per class, as for ImageFolder)") from e
    hidden = [name for name in names if name.startswith(".")]
    if hidden:
        # ImageFolder counts them too, so leaving them out would shift every later index.
        logger.warning("%s: ImageFolder counts hidden folders as classes too: %s", directory, ", ".join(hidden))
    validate_class_names(names, str(directory))
    return names


def validate_class_names(names: Sequence[Any], source: str) -> List[str]:
    """The names as a list of strings; ClassNamesError if there are none, or any is blank or repeated."""
    if len(names) == 0:
        raise ClassNamesError(f"class names: {source} holds no class names")
    first_seen: Dict[str, int] = {}
    repeated: List[str] = []
    for index, name in enumerate(names):
        if not isinstance(name, str):
            raise ClassNamesError(f"class names: {source}: class {index} is {name!r}, not a string")
        if not name.strip():
            raise ClassNamesError(f"class names: {source}: class {index} has a blank name")
        if name in first_seen:
            repeated.append(f"{name!r} (classes {first_seen[name]} and {index})")
        else:
            first_seen[name] = index
    if repeated:
        shown = ", ".join(repeated[:3]) + (f" and {len(repeated) - 3} more" if len(repeated) > 3 else "")
        raise ClassNamesError(f"class names: {source} has duplicated class names: {shown}")
    return list(names)


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise ClassNamesError(f"class names: {path}: {'not a file' if path.exists() else 'no such file'}")
    try:
        return path.read_text(encoding="utf-8-sig")  # tolerates the BOM that some editors write
    except UnicodeDecodeError as e:
        raise ClassNamesError(f"class names: {path} is not UTF-8 text: {e}") from e


def _from_lines(text: str, path: Path) -> List[str]:
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()  # trailing newlines
    for number, line in enumerate(lines, start=1):
        if not line:
            raise ClassNamesError(
                f"class names: {path} line {number} is blank; each line names the class of index line - 1"
            )
    return validate_class_names(lines, str(path))


def _from_json(data: Any, path: Path) -> List[str]:
    if isinstance(data, list):
        return validate_class_names(data, str(path))
    if not isinstance(data, dict):
        raise ClassNamesError(f"class names: {path} holds a JSON {type(data).__name__}; expected a list or an object")
    by_index: Dict[int, Any] = {}
    ids: Dict[int, str] = {}  # TorchServe's ["n01440764", "tench"] values carry an id before the name
    for key, value in data.items():
        try:
            index = int(key)
        except ValueError:
            index = -1
        if index < 0 or str(index) != key.strip():
            raise ClassNamesError(
                f'class names: {path}: key {key!r} is not a class index; expected {{"0": "name", ...}}'
            )
        by_index[index] = value[-1] if isinstance(value, list) and value else value
        if isinstance(value, list) and len(value) > 1:
            ids[index] = str(value[0])
    missing = sorted(set(range(len(by_index))) - set(by_index))
    if missing:
        shown = ", ".join(str(i) for i in missing[:5])
        raise ClassNamesError(
            f"class names: {path}: the keys must be the indices 0..{len(by_index) - 1} with none left out; "
            f"missing {shown}, highest is {max(by_index)}"
        )
    return validate_class_names(distinct_names([by_index[i] for i in range(len(by_index))], ids, path), str(path))


def distinct_names(names: List[Any], ids: Dict[int, str], path: Path) -> List[Any]:
    """`names` with every repeated one suffixed by its id (or its index): "crane (n02012849)".

    A top-k answer is a JSON object, which cannot hold two equal labels; ImageNet's own
    index_to_name.json names two classes "crane" (134 and 517).
    """
    counts = Counter(name for name in names if isinstance(name, str))
    repeated = {name for name, count in counts.items() if count > 1}
    if not repeated:
        return names
    renamed = [f"{name} ({ids.get(i, i)})" if name in repeated else name for i, name in enumerate(names)]
    changes = [f"{i}: {renamed[i]!r}" for i, name in enumerate(names) if name in repeated]
    logger.warning("%s names some classes alike; made distinct: %s", path, ", ".join(changes))
    return renamed


def log_class_names(names: Sequence[str], shown: int = SHOWN_NAMES) -> None:
    """Log how many classes will be served and the first and last few in index order, so that a wrong
    order (ImageFolder's sorted order against the training order) shows at build time."""
    if len(names) <= 2 * shown:
        listed = ", ".join(f"{i}: {name}" for i, name in enumerate(names))
    else:
        first = ", ".join(f"{i}: {names[i]}" for i in range(shown))
        last = ", ".join(f"{i}: {names[i]}" for i in range(len(names) - shown, len(names)))
        listed = f"{first}, ..., {last}"
    logger.info("serving %d classes, in output order: %s", len(names), listed)
