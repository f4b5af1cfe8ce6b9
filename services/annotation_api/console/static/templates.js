// Label config templates offered when creating a project, with a sample task each.
export const TEMPLATES = [
  {
    id: "text-classification",
    title: "Text classification",
    text: "Sort texts into classes (sentiment, topic…).",
    config: `<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single" showInLine="true">
    <Choice value="Positive"/>
    <Choice value="Negative"/>
    <Choice value="Neutral"/>
  </Choices>
</View>`,
    sample: '[{"text": "I love this product, it works great"}, {"text": "Terrible support, never again"}]',
  },
  {
    id: "ner",
    title: "Named entities",
    text: "Highlight spans of text: people, organisations, places.",
    config: `<View>
  <Labels name="label" toName="text">
    <Label value="PER" background="#f97316"/>
    <Label value="ORG" background="#6366f1"/>
    <Label value="LOC" background="#10b981"/>
  </Labels>
  <Text name="text" value="$text"/>
</View>`,
    sample: '[{"text": "Ada Lovelace met Charles Babbage in London. Later Ada wrote to Babbage from Paris."}]',
  },
  {
    id: "image-classification",
    title: "Image classification",
    text: "Pick a class for each image.",
    config: `<View>
  <Image name="image" value="$image"/>
  <Choices name="choice" toName="image" showInLine="true">
    <Choice value="Cat"/>
    <Choice value="Dog"/>
  </Choices>
</View>`,
    sample: '[{"image": "https://example.org/cat.jpg"}]',
  },
  {
    id: "bbox",
    title: "Bounding boxes",
    text: "Draw rectangles around objects in images.",
    config: `<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Car" background="#6366f1"/>
    <Label value="Person" background="#f97316"/>
  </RectangleLabels>
</View>`,
    sample: '[{"image": "https://example.org/street.jpg"}]',
  },
  { id: "custom", title: "Custom XML", text: "Paste your own Label Studio config.", config: "<View>\n</View>", sample: "" },
];
