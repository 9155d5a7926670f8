"""The framework-free core of bag-of-tricks, in layers (each imports only the ones above it):

- ``plugins.tricks``: the math of every trick, one module per trick (torch only);
- ``plugins.recipe``: the ``Recipe`` (every trick's setting, yaml presets in ``recipe/presets/``) and its step
  plan (``plugins.recipe.plan``: epochs to updates, the schedule in updates every adapter binds);
- ``plugins.runtime``: checkpoints, random state, the lr record;
- ``plugins.models``: the ``tricks_*`` timm models and the shared feature extractor (these import timm);
- ``plugins.data``: the built-in datasets (Fashion-MNIST, fashion photos, fashion scenes);
- ``plugins.reproduce``: the study, an application that runs the adapters' commands.
"""
