"""Build side: the Predictor, where networks, weights and class names come from, the export and its check, the .mar."""
