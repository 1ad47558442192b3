"""mar-builder: export an image classifier as a standalone TorchScript Predictor, pack it as a TorchServe .mar,
serve it, and measure it.

build/ is the build side, server/ runs and calls a TorchServe, validation/ measures an archive on labelled photos;
the TorchServe handler itself lives outside the package, in handler/, because it ships inside the .mar.
"""
