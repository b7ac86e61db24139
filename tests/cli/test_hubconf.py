"""hubconf.py: the networks built through torch.hub from a folder outside the checkout."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from tests.builders import TINY_EDVR, tiny_edvr

ROOT = Path(__file__).resolve().parents[2]


def test_torch_hub_builds_each_preset_and_loads_weights_from_anywhere(tmp_path):
    net = tiny_edvr(with_tsa=False)
    torch.save({"params": net.state_dict()}, tmp_path / "basicsr.pth")  # BasicSR's layout, no metadata
    x = torch.rand(1, 5, 3, 16, 20)
    with torch.no_grad():
        torch.save({"x": x, "y": net(x)}, tmp_path / "io.pt")
    script = textwrap.dedent(f"""
        import torch
        hub = dict(repo_or_dir={str(ROOT)!r}, source="local")
        net = torch.hub.load(**hub, model="edvr_m_wotsa", weights="basicsr.pth", **{TINY_EDVR!r})
        io = torch.load("io.pt", weights_only=True)
        with torch.no_grad():
            assert torch.equal(net(io["x"]), io["y"]), "the hub network differs"
        counts = {{name: sum(p.numel() for p in torch.hub.load(**hub, model=name).parameters())
                  for name in ("edvr_m", "edvr_m_wotsa", "edvr_l", "edvr_l_deblur")}}
        print(counts)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str({"edvr_m": 3_300_131, "edvr_m_wotsa": 2_996_259, "edvr_l": 20_633_827,
                                         "edvr_l_deblur": 23_602_019})
