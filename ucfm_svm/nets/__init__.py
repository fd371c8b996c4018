"""Deep nets in PyTorch (the ``[torch]`` extra): loss modules, streaming last-layer statistics,
the per-epoch :class:`~ucfm_svm.nets.monitor.GeometryMonitor`, the paper's models and data, and
the study runner. Its modules import torch; the rest of the package never imports them.
"""
