"""Archive: the .mar that TorchServe loads (the .pt, classify.onnx, the handler) and the runtimes it records."""
