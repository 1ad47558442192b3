"""The model: the Predictor, where networks, weights and class names come from, scripting, the check, classify.onnx."""
