"""gmae: Gaussian Masked Autoencoders (and MAE) in PyTorch.

Subpackages:
    gmae.data      data sets: offline archives, dataset specs, safe image loading
    gmae.render    differentiable Gaussian splatting (gsplat semantics, pure PyTorch)
    gmae.models    ViT encoder, MAE and GMAE
    gmae.train     the pretraining engine
    gmae.evaluate  linear probe, kNN, fine-tuning, reconstruction, boundary benchmark
    gmae.zeroshot  layering, edges, figure-ground from the Gaussians
    gmae.report    HTML reports
"""

__version__ = "0.1.0"

from gmae.hub import from_pretrained  # noqa: E402  (light: imports torch only when called)

__all__ = ["__version__", "from_pretrained"]
