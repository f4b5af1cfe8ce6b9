"""The simplest Label Studio ML backend, as a reference for people writing their own."""
