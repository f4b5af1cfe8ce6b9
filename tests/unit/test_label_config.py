"""Label config parsing: what Label Studio configs mean to labelloop, and what we refuse."""

from __future__ import annotations

import pytest

from shared.label_config import (
    LabelConfigError,
    parse_label_config,
    parse_label_config_cached,
)

TEXT_CLASSIFICATION = """
<View>
  <Header value="Choose the sentiment"/>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single-radio" showInLine="true">
    <Choice value="Positive"/>
    <Choice value="Negative" alias="neg"/>
    <Choice value="Neutral"/>
  </Choices>
</View>
"""

NER = """
<View>
  <Labels name="label" toName="text" smart="true">
    <Label value="PER" background="red"/>
    <Label value="ORG" background="blue"/>
  </Labels>
  <Text name="text" value="$text"/>
</View>
"""

IMAGE_BBOX = """
<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image" smartOnly="true">
    <Label value="Airplane"/>
    <Label value="Car"/>
  </RectangleLabels>
</View>
"""

MULTI_CONTROL = """
<View>
  <View style="display: flex">
    <Text name="title" value="$title"/>
    <Text name="body" value="$body"/>
    <Text name="note" value="Read both texts first."/>
  </View>
  <Choices name="topics" toName="title,body" choice="multiple">
    <View><Choice value="Sports"/><Choice value="Politics"/></View>
  </Choices>
  <TextArea name="summary" toName="body"/>
  <Rating name="quality" toName="body" maxRating="10"/>
  <Number name="year" toName="body" min="1900" max="2100"/>
  <Taxonomy name="taxonomy" toName="body">
    <Choice value="Animals"><Choice value="Cats"/><Choice value="Dogs"/></Choice>
  </Taxonomy>
  <Relations><Relation value="mentions"/><Relation value="cites"/></Relations>
  <Filter name="filter" toName="topics"/>
  <Style>.lsf-main { color: red; }</Style>
  <SomeFutureTag name="whatever" toName="nowhere"/>
</View>
"""


def parse_error(xml: str) -> LabelConfigError:
    with pytest.raises(LabelConfigError) as caught:
        parse_label_config(xml)
    return caught.value


def test_text_classification_config() -> None:
    config = parse_label_config(TEXT_CLASSIFICATION)

    assert [(o.name, o.type, o.value, o.data_key) for o in config.objects] == [
        ("text", "Text", "$text", "text")
    ]
    [control] = config.controls
    assert control.name == "sentiment"
    assert control.type == "Choices"
    assert control.to_name == ("text",)
    assert control.labels == ("Positive", "Negative", "Neutral")
    assert control.aliases == ("neg",)
    assert control.choice == "single"
    assert control.smart is False
    assert control.max_rating is None


def test_ner_config_labels_on_text() -> None:
    config = parse_label_config(NER)

    label = config.control("label")
    assert label is not None
    assert (label.type, label.to_name, label.labels) == ("Labels", ("text",), ("PER", "ORG"))
    assert label.smart is True
    assert label.smart_only is False
    assert label.choice is None


def test_image_bbox_config() -> None:
    config = parse_label_config(IMAGE_BBOX)

    assert config.objects[0].type == "Image"
    label = config.control("label")
    assert label is not None
    assert label.type == "RectangleLabels"
    assert label.labels == ("Airplane", "Car")
    assert label.smart_only is True
    assert config.required_data_keys() == {"image"}


def test_multi_control_config_with_layout_and_unknown_tags() -> None:
    config = parse_label_config(MULTI_CONTROL)

    assert [o.name for o in config.objects] == ["title", "body", "note"]
    assert [(c.name, c.type) for c in config.controls] == [
        ("topics", "Choices"),
        ("summary", "TextArea"),
        ("quality", "Rating"),
        ("year", "Number"),
        ("taxonomy", "Taxonomy"),
    ]
    topics = config.control("topics")
    assert topics is not None
    assert topics.choice == "multiple"
    assert topics.labels == ("Sports", "Politics")
    quality = config.control("quality")
    assert quality is not None and quality.max_rating == 10
    year = config.control("year")
    assert year is not None and (year.min, year.max) == (1900.0, 2100.0)
    taxonomy = config.control("taxonomy")
    assert taxonomy is not None and taxonomy.labels == ("Animals", "Cats", "Dogs")
    assert config.relation_labels == ("mentions", "cites")
    assert config.control("filter") is None
    assert config.control("whatever") is None


def test_comma_separated_to_name_is_split_and_trimmed() -> None:
    config = parse_label_config(
        '<View><Text name="a" value="$a"/><Text name="b" value="$b"/>'
        '<Choices name="c" toName=" a , b "><Choice value="x"/></Choices></View>'
    )

    control = config.control("c")
    assert control is not None and control.to_name == ("a", "b")


def test_literal_object_value_needs_no_data() -> None:
    config = parse_label_config(MULTI_CONTROL)

    note = next(o for o in config.objects if o.name == "note")
    assert note.data_key is None
    assert config.required_data_keys() == {"title", "body"}


def test_missing_data_keys() -> None:
    config = parse_label_config(MULTI_CONTROL)

    assert config.missing_data_keys({"title": "t", "body": "b", "extra": 1}) == []
    assert config.missing_data_keys({"title": "t"}) == ["body"]
    assert config.missing_data_keys({}) == ["body", "title"]


def test_rating_defaults_to_five_stars() -> None:
    config = parse_label_config('<View><Text name="t" value="$t"/><Rating name="r" toName="t"/></View>')

    rating = config.control("r")
    assert rating is not None and rating.max_rating == 5


def test_image_value_list_and_dynamic_choices() -> None:
    config = parse_label_config(
        '<View><Image name="img" valueList="$images"/>'
        '<Choices name="c" toName="img" value="$options"/></View>'
    )

    assert config.objects[0].data_key == "images"
    choices = config.control("c")
    assert choices is not None
    assert choices.labels == () and choices.labels_data_key == "options"
    assert config.required_data_keys() == {"images"}


def test_tag_names_match_case_insensitively() -> None:
    config = parse_label_config(
        '<view><text name="t" value="$t"/><choices name="c" toName="t"><choice value="x"/></choices></view>'
    )

    assert config.objects[0].type == "Text"
    control = config.control("c")
    assert control is not None and control.type == "Choices" and control.labels == ("x",)


def test_parsed_config_is_immutable() -> None:
    config = parse_label_config(NER)

    with pytest.raises(ValueError, match="frozen"):
        config.controls = ()  # type: ignore[misc]
    with pytest.raises(ValueError, match="frozen"):
        config.controls[0].labels = ("HACK",)  # type: ignore[misc]


def test_cached_parse_returns_the_same_object() -> None:
    first = parse_label_config_cached(NER)

    assert parse_label_config_cached(NER) is first
    assert parse_label_config_cached(IMAGE_BBOX) is not first
    assert first == parse_label_config(NER)


def test_cached_parse_does_not_cache_errors() -> None:
    for _ in range(2):
        with pytest.raises(LabelConfigError):
            parse_label_config_cached("<View><Choices name='c' toName='t'/></View>")


def test_big_config_keeps_every_label() -> None:
    labels = "".join(f'<Label value="label-{i}"/>' for i in range(20_000))
    xml = (
        f'<View><Text name="t" value="$t"/><Labels name="l" toName="t">{labels}</Labels>'
        '<Choices name="c" toName="t"><Choice value="a"/></Choices></View>'
    )

    control = parse_label_config(xml).control("l")
    assert control is not None and len(control.labels) == 20_000


# --- refused configs ---------------------------------------------------------------------------


@pytest.mark.parametrize("xml", ["<View><Text name='t' value='$t'>", "", "not xml at all"])
def test_malformed_xml(xml: str) -> None:
    error = parse_error(xml)

    assert "not well-formed XML" in str(error)
    assert error.tag is None and error.attribute is None


def test_root_must_be_view() -> None:
    error = parse_error('<Text name="t" value="$t"/>')

    assert str(error) == "root tag must be <View>, got <Text>"
    assert error.tag == "Text"


def test_control_without_name() -> None:
    error = parse_error(
        '<View><Text name="t" value="$t"/><Choices toName="t"><Choice value="x"/></Choices></View>'
    )

    assert str(error) == '<Choices>: missing required attribute "name"'
    assert (error.tag, error.attribute) == ("Choices", "name")


@pytest.mark.parametrize("to_name", [None, "", " , "])
def test_control_without_to_name(to_name: str | None) -> None:
    attribute = "" if to_name is None else f' toName="{to_name}"'
    error = parse_error(
        f'<View><Text name="t" value="$t"/><Choices name="sentiment"{attribute}>'
        '<Choice value="x"/></Choices></View>'
    )

    assert str(error) == '<Choices name="sentiment">: missing required attribute "toName"'
    assert (error.tag, error.attribute) == ("Choices", "toName")


def test_to_name_must_name_an_object_tag() -> None:
    error = parse_error(
        '<View><Text name="text" value="$text"/>'
        '<Choices name="sentiment" toName="text,txt"><Choice value="x"/></Choices></View>'
    )

    assert str(error) == '<Choices name="sentiment">: toName "txt" does not name an object tag'
    assert (error.tag, error.attribute) == ("Choices", "toName")


def test_to_name_naming_a_control_is_refused() -> None:
    error = parse_error(
        '<View><Text name="t" value="$t"/><Choices name="a" toName="t"><Choice value="x"/>'
        '</Choices><TextArea name="b" toName="a"/></View>'
    )

    assert str(error) == '<TextArea name="b">: toName "a" does not name an object tag'


def test_duplicate_names() -> None:
    error = parse_error(
        '<View><Text name="x" value="$t"/><Choices name="x" toName="x"><Choice value="y"/></Choices></View>'
    )

    assert str(error) == '<Choices name="x">: name "x" is already used by <Text name="x">'
    assert (error.tag, error.attribute) == ("Choices", "name")


def test_duplicate_object_names() -> None:
    error = parse_error('<View><Text name="t" value="$a"/><Image name="t" value="$b"/></View>')

    assert str(error) == '<Image name="t">: name "t" is already used by <Text name="t">'


def test_object_without_name() -> None:
    error = parse_error('<View><Text value="$text"/></View>')

    assert str(error) == '<Text>: missing required attribute "name"'
    assert (error.tag, error.attribute) == ("Text", "name")


def test_object_without_value() -> None:
    error = parse_error('<View><Image name="img"/></View>')

    assert str(error) == '<Image name="img">: missing required attribute "value"'
    assert (error.tag, error.attribute) == ("Image", "value")


@pytest.mark.parametrize(
    ("control", "child"),
    [("Choices", "Choice"), ("Labels", "Label"), ("RectangleLabels", "Label")],
)
def test_labeled_control_without_labels(control: str, child: str) -> None:
    error = parse_error(f'<View><Text name="t" value="$t"/><{control} name="c" toName="t"/></View>')

    assert str(error) == (f'<{control} name="c">: defines no labels (add <{child} value="..."> children)')
    assert error.tag == control


def test_label_without_value() -> None:
    error = parse_error(
        '<View><Text name="t" value="$t"/><Labels name="l" toName="t">'
        '<Label value="ok"/><Label alias="x"/></Labels></View>'
    )

    assert str(error) == '<Label> in <Labels name="l">: missing required attribute "value"'
    assert (error.tag, error.attribute) == ("Label", "value")


def test_relation_without_value() -> None:
    error = parse_error("<View><Relations><Relation/></Relations></View>")

    assert str(error) == '<Relation>: missing required attribute "value"'
    assert (error.tag, error.attribute) == ("Relation", "value")


@pytest.mark.parametrize("max_rating", ["0", "-3", "five", "2.5"])
def test_bad_max_rating(max_rating: str) -> None:
    error = parse_error(
        f'<View><Text name="t" value="$t"/><Rating name="r" toName="t" maxRating="{max_rating}"/></View>'
    )

    assert str(error) == f'<Rating name="r">: maxRating "{max_rating}" is not a positive integer'
    assert (error.tag, error.attribute) == ("Rating", "maxRating")


@pytest.mark.parametrize(("attribute", "raw"), [("min", "low"), ("max", "inf"), ("min", "nan")])
def test_bad_number_bounds(attribute: str, raw: str) -> None:
    error = parse_error(
        f'<View><Text name="t" value="$t"/><Number name="n" toName="t" {attribute}="{raw}"/></View>'
    )

    assert str(error) == f'<Number name="n">: {attribute} "{raw}" is not a finite number'
    assert (error.tag, error.attribute) == ("Number", attribute)


def test_number_min_above_max() -> None:
    error = parse_error(
        '<View><Text name="t" value="$t"/><Number name="n" toName="t" min="5" max="1"/></View>'
    )

    assert str(error) == '<Number name="n">: min 5 is greater than max 1'
    assert (error.tag, error.attribute) == ("Number", "min")


def test_error_is_a_value_error() -> None:
    assert issubclass(LabelConfigError, ValueError)


# --- hostile XML -------------------------------------------------------------------------------

XXE = """<?xml version="1.0"?>
<!DOCTYPE View [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<View><Text name="t" value="$t"/><Header value="&secret;"/></View>
"""

BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol0 "lol">'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10}">' for i in range(1, 10))
    + ']><View><Text name="t" value="&lol9;"/></View>'
)


@pytest.mark.parametrize(
    "xml",
    [
        XXE,
        BILLION_LAUGHS,
        '<!DOCTYPE View SYSTEM "http://169.254.169.254/latest"><View/>',
        "<!DOCTYPE View><View/>",
    ],
    ids=["xxe", "billion-laughs", "external-dtd", "bare-doctype"],
)
def test_doctype_and_entities_are_refused(xml: str) -> None:
    error = parse_error(xml)

    # Refused at the declaration, before any entity is expanded.
    assert "must not contain a DOCTYPE or entity declarations" in str(error)
