"""The YAML form of an images file (see :mod:`airgap.inputs`), apart so that PyYAML is loaded only for one."""

from __future__ import annotations

from typing import Any

import yaml  # type: ignore[import-untyped, unused-ignore]

from airgap.errors import AirgapError, InvalidInput
from airgap.inputs import _YAML_HINT, ImageSpec, _check_ref, _shorten
from airgap.model.platform import Platform

_ITEM_KEYS = ("ref", "platforms", "platform")


class _ItemError(Exception):
    def __init__(self, node: Any, message: str, hint: str) -> None:
        super().__init__(message)
        self.node, self.message, self.hint = node, message, hint


def _line(node: Any) -> int:
    return int(node.start_mark.line) + 1


def parse_yaml(text: str, name: str) -> list[ImageSpec]:
    """The images of a YAML images file (see :mod:`airgap.inputs`); ``name`` is used in messages."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = str(exc.problem or exc.context or "not YAML")
        if problem.startswith("but ") and exc.context:  # "expected a single document in the stream, but found ..."
            problem = f"{exc.context}, {problem}"
        problem = " ".join(problem.split())
        raise InvalidInput(f"{name}{where}: invalid YAML: {problem}", hint=_YAML_HINT) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise InvalidInput(
            f"{name} line {line}: invalid YAML: character U+{int(exc.character):04X} is not allowed", hint=_YAML_HINT
        ) from None
    except (yaml.YAMLError, RecursionError) as exc:
        detail = "nested too deeply" if isinstance(exc, RecursionError) else (str(exc).splitlines() or ["?"])[0]
        raise InvalidInput(f"{name}: invalid YAML: {detail}", hint=_YAML_HINT) from None
    if root is None or _is_null(root):
        return []
    if not isinstance(root, yaml.MappingNode):
        raise InvalidInput(f"{name} line {_line(root)}: expected `images:` at the top", hint=_YAML_HINT)
    images: Any = None
    for key, value in root.value:
        key_text = key.value if isinstance(key, yaml.ScalarNode) else "?"
        if key_text != "images":
            raise InvalidInput(
                f"{name} line {_line(key)}: unknown key {_shorten(key_text)}, expected `images:`", hint=_YAML_HINT
            )
        if images is not None:
            raise InvalidInput(f"{name} line {_line(key)}: `images:` is given twice", hint=_YAML_HINT)
        images = value
    if images is None or _is_null(images):
        return []
    if not isinstance(images, yaml.SequenceNode):
        raise InvalidInput(f"{name} line {_line(images)}: `images:` must be a list", hint=_YAML_HINT)
    specs: list[ImageSpec] = []
    for index, item in enumerate(images.value, start=1):
        try:
            specs.append(_yaml_item(item))
        except _ItemError as exc:
            raise InvalidInput(f"{name} line {_line(exc.node)}: item {index}: {exc.message}", hint=exc.hint) from None
    return specs


def _is_null(node: Any) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _scalar(node: Any, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise _ItemError(node, f"{what} must be a string", _YAML_HINT)
    if _is_null(node) or not str(node.value).strip():
        raise _ItemError(node, f"{what} is empty", _YAML_HINT)
    return str(node.value).strip()


def _yaml_item(item: Any) -> ImageSpec:
    if isinstance(item, yaml.ScalarNode):
        return ImageSpec(_yaml_ref(item))
    if not isinstance(item, yaml.MappingNode):
        raise _ItemError(item, "expected a reference or a mapping with ref:", _YAML_HINT)
    fields: dict[str, Any] = {}
    for key, value in item.value:
        key_text = key.value if isinstance(key, yaml.ScalarNode) else "?"
        if key_text not in _ITEM_KEYS:
            raise _ItemError(key, f"unknown key {_shorten(key_text)} (known: {', '.join(_ITEM_KEYS)})", _YAML_HINT)
        if key_text in fields:
            raise _ItemError(key, f"{key_text!r} is given twice", _YAML_HINT)
        fields[key_text] = value
    if "ref" not in fields:
        raise _ItemError(item, "no ref: given", _YAML_HINT)
    if "platform" in fields and "platforms" in fields:
        raise _ItemError(fields["platform"], "give either platform: or platforms:, not both", _YAML_HINT)
    ref = _yaml_ref(fields["ref"])
    nodes: list[Any] = []
    if "platform" in fields:
        nodes = [fields["platform"]]
    elif "platforms" in fields:
        value = fields["platforms"]
        if isinstance(value, yaml.SequenceNode):
            nodes = list(value.value)
        elif not _is_null(value):
            nodes = [value]
    platforms: list[str] = []
    for node in nodes:
        text = _scalar(node, "a platform")
        try:
            platform = str(Platform.parse(text))
        except AirgapError as exc:
            raise _ItemError(node, exc.message, exc.hint) from None
        if platform not in platforms:
            platforms.append(platform)
    return ImageSpec(ref, tuple(platforms))


def _yaml_ref(node: Any) -> str:
    ref = _scalar(node, "the reference")
    try:
        _check_ref(ref)
    except AirgapError as exc:
        raise _ItemError(node, exc.message, exc.hint) from None
    return ref
