"""torch.hub entry points: the EDVR networks of this checkout, usable from any folder.

    import torch
    net = torch.hub.load("path/to/vidrestore", "edvr_m", source="local", weights="EDVR_M_x4_SR_REDS.pth")
    sr = net(torch.rand(1, 5, 3, 180, 320))   # (B, T, C, H, W) in [0, 1] -> (1, 3, 720, 1280)

Each entry returns an ``EDVR`` in eval mode: BasicSR's presets (parameter names and shapes as
BasicSR, so its weights load unchanged), any constructor argument overridable by keyword.
``weights``: a weights file of ours or BasicSR's (``params_ema`` preferred, else ``params``).
"""

dependencies = ["torch", "torchvision"]

from models.checkpoint import load_network  # noqa: E402
from models.edvr import EDVR  # noqa: E402

PRESETS = {
    "edvr_m": {},
    "edvr_m_wotsa": {"with_tsa": False},
    "edvr_l": {"num_feat": 128, "num_reconstruct_block": 40},
    "edvr_l_deblur": {"num_feat": 128, "num_reconstruct_block": 40, "hr_in": True, "with_predeblur": True},
}


def _build(preset: str, weights: str | None, kwargs: dict) -> EDVR:
    net = EDVR(**{**PRESETS[preset], **kwargs})
    if weights is not None:
        load_network(net, weights)
    return net.eval()


def edvr_m(weights: str | None = None, **kwargs) -> EDVR:
    """EDVR-M, x4 super-resolution (64 features, 10 reconstruction blocks, TSA fusion)."""
    return _build("edvr_m", weights, kwargs)


def edvr_m_wotsa(weights: str | None = None, **kwargs) -> EDVR:
    """EDVR-M without TSA (stage 1 of the REDS recipe)."""
    return _build("edvr_m_wotsa", weights, kwargs)


def edvr_l(weights: str | None = None, **kwargs) -> EDVR:
    """EDVR-L, x4 super-resolution (128 features, 40 reconstruction blocks)."""
    return _build("edvr_l", weights, kwargs)


def edvr_l_deblur(weights: str | None = None, **kwargs) -> EDVR:
    """EDVR-L for deblurring: input and output at full resolution (hr_in, predeblur)."""
    return _build("edvr_l_deblur", weights, kwargs)
