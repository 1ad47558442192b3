"""Build side: export an image classifier to a standalone TorchScript Predictor and pack it as a TorchServe .mar."""
