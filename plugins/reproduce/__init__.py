"""The main job: the paper's ablation and transfer tables reproduced small, offline (``python -m plugins.reproduce``).

Every training runs as a subprocess of the adapters' own commands (``timm_ext.train``, ``mm_ext.train``,
``d2_ext.train_net``), so this package itself imports no framework.
"""
