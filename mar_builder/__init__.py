"""mar-builder: export an image classifier as a standalone TorchScript Predictor, pack it as a TorchServe .mar,
serve it, and measure it.

build/ is the build side, server/ runs and calls a TorchServe, validation/ measures an archive on labelled photos;
the TorchServe handler itself lives outside the package, in handler/, because it ships inside the .mar.
"""

# The Python API (docs/recipes.md). torch loads only when one of them is called: `import mar_builder` stays cheap.


def export(*args, **kwargs):
    """mar_builder.model.api.export: write a verified Predictor .pt from a model object and its eval transform."""
    from .model.api import export as export_pt

    return export_pt(*args, **kwargs)


def build(*args, **kwargs):
    """mar_builder.model.api.build: export, then pack model_store/<name>.mar."""
    from .model.api import build as build_mar

    return build_mar(*args, **kwargs)
