"""Label Studio labeling-config schema shared by the annotation API and the model gateway.

Both services must read a config the same way: the API checks configs and imported task data, the
gateway checks every predicted region against it. Configs come from users, so the XML is parsed with
defusedxml and any DOCTYPE is refused (no external entities, no entity expansion bombs).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from functools import cached_property, lru_cache
from typing import Any, Final, Literal
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeElementTree
from pydantic import BaseModel, ConfigDict

#: Tags that display task data; a control's toName must name one of them.
OBJECT_TAGS: Final[frozenset[str]] = frozenset(
    {
        "Audio",
        "AudioPlus",
        "HyperText",
        "Image",
        "List",
        "Paragraphs",
        "Table",
        "Text",
        "TimeSeries",
        "Video",
    }
)

#: Controls whose allowed values are their <Choice>/<Label> children (or a `value="$key"` list).
LABELED_CONTROL_TAGS: Final[frozenset[str]] = frozenset(
    {
        "BitmaskLabels",
        "BrushLabels",
        "Choices",
        "EllipseLabels",
        "HyperTextLabels",
        "KeyPointLabels",
        "Labels",
        "ParagraphLabels",
        "PolygonLabels",
        "RectangleLabels",
        "TimeSeriesLabels",
        "TimelineLabels",
    }
)

#: Tags that produce result regions. Taxonomy is not in LABELED_CONTROL_TAGS: it may load its
#: tree from `apiUrl` and then has no children.
CONTROL_TAGS: Final[frozenset[str]] = LABELED_CONTROL_TAGS | frozenset(
    {
        "Bitmask",
        "Brush",
        "DateTime",
        "Ellipse",
        "KeyPoint",
        "Number",
        "Polygon",
        "Ranker",
        "Rating",
        "Rectangle",
        "Taxonomy",
        "TextArea",
        "VideoRectangle",
    }
)

#: A <Labels> control combined with one of these tools on the same object yields merged regions
#: typed "<tool>labels" (e.g. "rectanglelabels") whose from_name is the Labels control.
_LABELABLE_TOOLS: Final = frozenset({"Bitmask", "Brush", "Ellipse", "KeyPoint", "Polygon", "Rectangle"})

# Label Studio's frontend matches tag names case-insensitively; so do we.
_OBJECT_BY_LOWER: Final = {tag.lower(): tag for tag in OBJECT_TAGS}
_CONTROL_BY_LOWER: Final = {tag.lower(): tag for tag in CONTROL_TAGS}
_LABEL_CHILD_TAGS: Final = frozenset({"choice", "label"})
_DATA_REFERENCE: Final = re.compile(r"\$([^\s,$]+)")
_DEFAULT_MAX_RATING: Final = 5


class LabelConfigError(ValueError):
    """A config Label Studio would not run; `tag`/`attribute` point at the culprit when known."""

    def __init__(self, message: str, *, tag: str | None = None, attribute: str | None = None):
        super().__init__(message)
        self.message = message
        self.tag = tag
        self.attribute = attribute


class _Frozen(BaseModel):
    # Parsed configs are cached and shared between requests, so nobody may mutate one.
    model_config = ConfigDict(frozen=True, extra="forbid")


class ObjectTag(_Frozen):
    """A tag showing task data, e.g. <Text name="txt" value="$text"/>."""

    name: str
    type: str
    value: str
    #: Task data key read by the tag (`text` for `$text`); None when `value` is a literal.
    data_key: str | None


class ControlTag(_Frozen):
    """A tag producing result regions, e.g. <Choices name="sentiment" toName="txt">."""

    name: str
    type: str
    to_name: tuple[str, ...]
    #: `value` attributes of the <Choice>/<Label> children, in document order.
    labels: tuple[str, ...] = ()
    #: `alias` attributes of those children: Label Studio writes the alias into results instead.
    aliases: tuple[str, ...] = ()
    #: Task data key that supplies labels at labeling time (`<Choices value="$options">`).
    labels_data_key: str | None = None
    smart: bool = False
    smart_only: bool = False
    #: Only for Choices.
    choice: Literal["single", "multiple"] | None = None
    #: Only for Rating.
    max_rating: int | None = None
    #: Only for Number.
    min: float | None = None
    max: float | None = None

    @cached_property
    def allowed_labels(self) -> frozenset[str] | None:
        """Labels (and aliases) a result may name; None when they cannot be checked here: labels from
        task data (``value="$key"``) or a remote taxonomy. Built once, read per region."""
        if self.labels_data_key is not None or not self.labels:
            return None
        return frozenset((*self.labels, *self.aliases))


class LabelConfig(_Frozen):
    """A parsed labeling config: what data it reads and what results it accepts."""

    objects: tuple[ObjectTag, ...]
    controls: tuple[ControlTag, ...]
    #: `value`s of <Relation> children of <Relations>, the labels a relation may carry.
    relation_labels: tuple[str, ...] = ()

    @cached_property
    def controls_by_name(self) -> Mapping[str, ControlTag]:
        """Controls indexed once; region validation looks one up per region. A plain instance attribute
        once computed: a pydantic private attribute would go through ``__getattr__`` on every read."""
        return {control.name: control for control in self.controls}

    @cached_property
    def region_types(self) -> Mapping[str, frozenset[str]]:
        """Control name → the region types its results may carry: its own lowercased tag, and for
        <Labels> also ``<tool>labels`` for each labelable tool over the same object (merged regions)."""
        types: dict[str, frozenset[str]] = {}
        for control in self.controls:
            own = control.type.lower()
            merged: set[str] = set()
            if control.type == "Labels":
                targets = set(control.to_name)
                merged = {
                    f"{tool.type.lower()}labels"
                    for tool in self.controls
                    if tool.type in _LABELABLE_TOOLS and targets.intersection(tool.to_name)
                }
            types[control.name] = frozenset({own, *merged})
        return types

    def control(self, name: str) -> ControlTag | None:
        """The control tag called `name`, or None."""
        return self.controls_by_name.get(name)

    def required_data_keys(self) -> set[str]:
        """Task data keys the object tags read; a task lacking one cannot be shown."""
        return {obj.data_key for obj in self.objects if obj.data_key is not None}

    def missing_data_keys(self, data: Mapping[str, Any]) -> list[str]:
        """Required keys absent from a task's `data`, sorted for stable error messages."""
        return sorted(key for key in self.required_data_keys() if key not in data)


def parse_label_config(xml: str) -> LabelConfig:
    """Parse and check a labeling config; pure, so callers may cache or run it in a thread."""
    root = _parse_xml(xml)
    if root.tag.lower() != "view":
        raise LabelConfigError(f"root tag must be <View>, got <{root.tag}>", tag=root.tag)
    objects: list[ObjectTag] = []
    controls: list[ControlTag] = []
    relation_labels: list[str] = []
    for element in root.iter():
        lower = element.tag.lower()
        if lower in _OBJECT_BY_LOWER:
            objects.append(_parse_object(element, _OBJECT_BY_LOWER[lower]))
        elif lower in _CONTROL_BY_LOWER:
            controls.append(_parse_control(element, _CONTROL_BY_LOWER[lower]))
        elif lower == "relation":
            relation_labels.append(_required(element, "Relation", "value", "<Relation>"))
    _check_unique_names(objects, controls)
    object_names = {obj.name for obj in objects}
    for control in controls:
        for target in control.to_name:
            if target not in object_names:
                raise LabelConfigError(
                    f'{_describe(control.type, control.name)}: toName "{target}" does not name an object tag',
                    tag=control.type,
                    attribute="toName",
                )
    return LabelConfig(
        objects=tuple(objects), controls=tuple(controls), relation_labels=tuple(relation_labels)
    )


@lru_cache(maxsize=128)
def parse_label_config_cached(xml: str) -> LabelConfig:
    """parse_label_config memoized on the XML text, for per-request use; the result is frozen."""
    return parse_label_config(xml)


def _parse_xml(xml: str) -> Element:
    try:
        root: Element = SafeElementTree.fromstring(xml, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise LabelConfigError(
            f"label config must not contain a DOCTYPE or entity declarations ({exc!r})"
        ) from exc
    except ParseError as exc:
        raise LabelConfigError(f"label config is not well-formed XML: {exc}") from exc
    return root


def _parse_object(element: Element, tag: str) -> ObjectTag:
    name = _required(element, tag, "name", f"<{tag}>")
    # <Image valueList="$images"> is Label Studio's multi-image form of `value`.
    value = element.get("value") or element.get("valueList")
    if not value:
        raise LabelConfigError(
            f'{_describe(tag, name)}: missing required attribute "value"',
            tag=tag,
            attribute="value",
        )
    return ObjectTag(name=name, type=tag, value=value, data_key=_data_key(value))


def _parse_control(element: Element, tag: str) -> ControlTag:
    name = _required(element, tag, "name", f"<{tag}>")
    where = _describe(tag, name)
    to_name = tuple(part.strip() for part in element.get("toName", "").split(",") if part.strip())
    if not to_name:
        raise LabelConfigError(f'{where}: missing required attribute "toName"', tag=tag, attribute="toName")
    labels, aliases = _child_labels(element, where)
    labels_data_key = _data_key(element.get("value", ""))
    if tag in LABELED_CONTROL_TAGS and not labels and labels_data_key is None:
        child = "Choice" if tag == "Choices" else "Label"
        raise LabelConfigError(f'{where}: defines no labels (add <{child} value="..."> children)', tag=tag)
    choice: Literal["single", "multiple"] | None = None
    if tag == "Choices":
        # Label Studio's values are single, single-radio and multiple.
        choice = "multiple" if element.get("choice") == "multiple" else "single"
    low = _bound(element, "min", where) if tag == "Number" else None
    high = _bound(element, "max", where) if tag == "Number" else None
    if low is not None and high is not None and low > high:
        raise LabelConfigError(f"{where}: min {low:g} is greater than max {high:g}", tag=tag, attribute="min")
    return ControlTag(
        name=name,
        type=tag,
        to_name=to_name,
        labels=labels,
        aliases=aliases,
        labels_data_key=labels_data_key,
        smart=_flag(element, "smart"),
        smart_only=_flag(element, "smartOnly"),
        choice=choice,
        max_rating=_max_rating(element, where) if tag == "Rating" else None,
        min=low,
        max=high,
    )


def _child_labels(element: Element, where: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Values and aliases of the <Choice>/<Label> tags anywhere below a control (Taxonomy nests)."""
    labels: list[str] = []
    aliases: list[str] = []
    for child in element.iter():
        if child is element or child.tag.lower() not in _LABEL_CHILD_TAGS:
            continue
        labels.append(_required(child, child.tag, "value", f"<{child.tag}> in {where}"))
        alias = child.get("alias")
        if alias:
            aliases.append(alias)
    return tuple(labels), tuple(aliases)


def _check_unique_names(objects: list[ObjectTag], controls: list[ControlTag]) -> None:
    # Regions refer to tags by name (from_name/to_name), so a name must mean one tag.
    seen: dict[str, str] = {}
    tags: list[ObjectTag | ControlTag] = [*objects, *controls]
    for tag in tags:
        if tag.name in seen:
            raise LabelConfigError(
                f'{_describe(tag.type, tag.name)}: name "{tag.name}" is already used by {seen[tag.name]}',
                tag=tag.type,
                attribute="name",
            )
        seen[tag.name] = _describe(tag.type, tag.name)


def _required(element: Element, tag: str, attribute: str, where: str) -> str:
    value = element.get(attribute)
    if not value:
        raise LabelConfigError(
            f'{where}: missing required attribute "{attribute}"', tag=tag, attribute=attribute
        )
    return value


def _data_key(value: str) -> str | None:
    match = _DATA_REFERENCE.fullmatch(value)
    return match.group(1) if match else None


def _flag(element: Element, attribute: str) -> bool:
    return element.get(attribute, "").lower() == "true"


def _max_rating(element: Element, where: str) -> int:
    raw = element.get("maxRating")
    if raw is None:
        return _DEFAULT_MAX_RATING
    try:
        max_rating = int(raw)
    except ValueError:
        max_rating = 0
    if max_rating < 1:
        raise LabelConfigError(
            f'{where}: maxRating "{raw}" is not a positive integer',
            tag="Rating",
            attribute="maxRating",
        )
    return max_rating


def _bound(element: Element, attribute: str, where: str) -> float | None:
    raw = element.get(attribute)
    if raw is None:
        return None
    try:
        bound = float(raw)
    except ValueError:
        bound = math.nan
    if not math.isfinite(bound):
        raise LabelConfigError(
            f'{where}: {attribute} "{raw}" is not a finite number',
            tag="Number",
            attribute=attribute,
        )
    return bound


def _describe(tag: str, name: str) -> str:
    return f'<{tag} name="{name}">'
