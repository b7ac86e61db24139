"""EDVR: parameter names/shapes equal the reference's, shapes, checks, batched PCD."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

from models.blocks import ResidualBlockNoBN, conv_part
from models.edvr import EDVR, PCDAlignment
from ops.dcn import dcn_packs

# BasicSR's EDVR state-dict keys and shapes, one file per preset (facts copied into the repository)
REFERENCE_DIR = Path(__file__).resolve().parents[1] / "reference"

CONFIGS = {
    "edvr_m": dict(),
    "edvr_m_wotsa": dict(with_tsa=False),
    "edvr_l": dict(num_feat=128, num_reconstruct_block=40),
    "edvr_l_deblur": dict(num_feat=128, num_reconstruct_block=40, hr_in=True, with_predeblur=True),
}
PARAMETER_COUNTS = {"edvr_m": 3_300_131, "edvr_m_wotsa": 2_996_259, "edvr_l": 20_633_827, "edvr_l_deblur": 23_602_019}
TINY = dict(num_feat=16, deformable_groups=4, num_extract_block=1, num_reconstruct_block=1)


def read_reference(name: str) -> tuple[list[tuple[str, tuple[int, ...]]], int]:
    path = REFERENCE_DIR / f"{name}_state_dict.txt"
    if not path.is_file():
        pytest.fail(f"reference file missing: {path}")
    entries, count = [], None
    for line in path.read_text().splitlines():
        if line.startswith("# parameters:"):
            count = int(line.split()[2])
        elif line and not line.startswith("#"):
            key, shape = line.split(" ", 1)
            entries.append((key, tuple(ast.literal_eval(shape))))
    return entries, count


@pytest.mark.parametrize("name", CONFIGS)
def test_state_dict_equals_the_reference(name):
    net = EDVR(**CONFIGS[name])
    expected, expected_count = read_reference(name)
    ours = [(key, tuple(value.shape)) for key, value in net.state_dict().items()]
    assert ours == expected  # same keys, same shapes, same order
    count = sum(p.numel() for p in net.parameters())
    assert count == expected_count == PARAMETER_COUNTS[name]


@pytest.mark.parametrize(
    "kwargs,in_shape,out_shape",
    [
        (dict(TINY), (2, 5, 3, 16, 20), (2, 3, 64, 80)),
        (dict(TINY, with_tsa=False), (1, 5, 3, 12, 8), (1, 3, 48, 32)),
        (dict(TINY, num_frame=3, center_frame_idx=0), (1, 3, 3, 8, 8), (1, 3, 32, 32)),
        (dict(TINY, num_frame=7), (1, 7, 3, 8, 12), (1, 3, 32, 48)),
        (dict(TINY, with_predeblur=True), (1, 5, 3, 16, 16), (1, 3, 64, 64)),
        (dict(TINY, with_predeblur=True, hr_in=True), (1, 5, 3, 32, 48), (1, 3, 32, 48)),
        (dict(TINY, num_in_ch=1, num_out_ch=1), (1, 5, 1, 8, 8), (1, 1, 32, 32)),
    ],
)
def test_output_shapes(kwargs, in_shape, out_shape):
    net = EDVR(**kwargs).eval()
    with torch.no_grad():
        assert tuple(net(torch.rand(in_shape)).shape) == out_shape


def test_zero_residual_gives_the_bilinear_base():
    """With conv_last zeroed the network outputs exactly the upsampled centre frame."""
    net = EDVR(**TINY, num_frame=3, center_frame_idx=2).eval()
    torch.nn.init.zeros_(net.conv_last.weight)
    torch.nn.init.zeros_(net.conv_last.bias)
    x = torch.rand(1, 3, 3, 8, 12)
    expected = torch.nn.functional.interpolate(x[:, 2], scale_factor=4, mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(net(x), expected, rtol=0, atol=0)


def test_batched_pcd_equals_per_frame_alignment():
    """All T frames go through PCD as one batch; the reference loops over frames."""
    torch.manual_seed(0)
    net = EDVR(**TINY).eval().double()
    with torch.no_grad():  # non-zero offsets, so the DCNs really deform
        for pack in net.dcn_packs:
            pack.conv_offset.weight.normal_(0, 0.05)
            pack.conv_offset.bias.normal_(0, 1.0)
    captured = {}
    hook = net.pcd_align.register_forward_hook(lambda m, args, out: captured.update(args=args, out=out))
    b, t = 2, 5
    with torch.no_grad():
        net(torch.rand(b, t, 3, 16, 12, dtype=torch.float64))
        hook.remove()
        nbr_feat_l, _ = captured["args"]
        per_clip = [f.view(b, t, *f.shape[1:]) for f in nbr_feat_l]
        ref = [f[:, net.center_frame_idx] for f in per_clip]
        looped = torch.stack([net.pcd_align([f[:, i] for f in per_clip], ref) for i in range(t)], dim=1)
    assert min(p.offset_magnitude for p in net.dcn_packs) > 0.1
    torch.testing.assert_close(captured["out"].view(b, t, *looped.shape[2:]), looped, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kwargs", [dict(TINY), dict(TINY, with_tsa=False, num_frame=3),
                                    dict(TINY, with_predeblur=True, hr_in=True)])
@pytest.mark.parametrize("strip_rows", [None, 3, 8])
def test_restoring_from_per_frame_features_equals_forward(kwargs, strip_rows):
    """Pyramids computed one frame at a time (as restoration reuses them across windows),
    per-frame alignment and upsampling in row strips give forward's result."""
    torch.manual_seed(0)
    net = EDVR(**kwargs).eval().double()
    with torch.no_grad():
        for pack in net.dcn_packs:
            pack.conv_offset.weight.normal_(0, 0.05)
            pack.conv_offset.bias.normal_(0, 1.0)
    b, t = 2, net.num_frame
    size = (64, 48) if net.hr_in else (20, 12)  # 20 rows: strips of 3 rows leave a 2-row remainder
    x = torch.rand(b, t, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        expected = net(x)
        pyramids = [net.extract_features(x[:, i]) for i in range(t)]
        out = net.restore_from_features(pyramids, x[:, net.center_frame_idx], strip_rows=strip_rows)
    assert min(p.offset_magnitude for p in net.dcn_packs) > 0.1
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_upsample_strips_partition_the_rows():
    from models.edvr import UPSAMPLE_REACH, upsample_strips

    strips = upsample_strips(20, 6)
    assert [core for core, _ in strips] == [(0, 6), (6, 12), (12, 18), (18, 20)]
    assert [context for _, context in strips] == [(0, 8), (4, 14), (10, 20), (16, 20)]
    assert UPSAMPLE_REACH == 2
    with pytest.raises(ValueError, match="at least 1"):
        upsample_strips(20, 0)


def test_initialisation_follows_the_reference():
    torch.manual_seed(0)
    net = EDVR()
    block = net.reconstruction[0]
    assert isinstance(block, ResidualBlockNoBN)
    expected_std = 0.1 * math.sqrt(2 / (64 * 9))  # kaiming normal (fan_in) x 0.1
    assert block.conv1.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    assert block.conv1.bias.eq(0).all() and block.conv2.bias.eq(0).all()
    for pack in net.dcn_packs:
        assert pack.conv_offset.weight.eq(0).all() and pack.conv_offset.bias.eq(0).all()
        assert pack.weight.abs().max() <= 1 / math.sqrt(64 * 9) and pack.bias.eq(0).all()


@pytest.mark.parametrize("kwargs", [dict(TINY), dict(TINY, with_tsa=False, with_predeblur=True)])
def test_every_parameter_gets_a_gradient(kwargs):
    net = EDVR(**kwargs)
    net(torch.rand(1, 5, 3, 8, 8)).abs().mean().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize(
    "shape,message",
    [
        ((5, 3, 16, 16), r"expected \(B, T, C, H, W\), got shape \(5, 3, 16, 16\)"),
        ((1, 4, 3, 16, 16), r"expected T=5 frames of C=3 channels"),
        ((1, 5, 1, 16, 16), r"expected T=5 frames of C=3 channels"),
        ((1, 5, 3, 18, 16), r"H and W must be multiples of 4, got 18x16"),
        ((1, 5, 3, 16, 10), r"H and W must be multiples of 4, got 16x10"),
    ],
)
def test_bad_input_shapes_raise(shape, message):
    with pytest.raises(ValueError, match=message):
        EDVR(**TINY)(torch.rand(shape))


def test_hr_in_needs_multiples_of_16():
    net = EDVR(**TINY, hr_in=True, with_predeblur=True)
    with pytest.raises(ValueError, match=r"multiples of 16 \(hr_in\), got 40x32"):
        net(torch.rand(1, 5, 3, 40, 32))


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(center_frame_idx=5), r"center_frame_idx: expected 0 <= index < num_frame=5, got 5"),
        (dict(num_feat=20, deformable_groups=8), r"num_feat \(20\) must be divisible by deformable_groups \(8\)"),
        (dict(hr_in=True), r"hr_in=True needs with_predeblur=True"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EDVR(**kwargs)


def test_backend_choice_reaches_every_dcn_pack():
    net = EDVR(**TINY, dcn_backend="reference")
    assert len(net.dcn_packs) == 4 and all(p.backend == "reference" for p in net.dcn_packs)
    x = torch.rand(1, 5, 3, 8, 8)
    other = EDVR(**TINY, dcn_backend="torchvision")
    other.load_state_dict(net.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(net(x), other(x), rtol=0, atol=1e-5)


def test_max_offset_keeps_the_reference_parameters_and_bounds_every_pack():
    torch.manual_seed(0)
    free = EDVR(**TINY).eval()
    bounded = EDVR(**TINY, max_offset=2.0).eval()
    shapes = [(k, v.shape) for k, v in free.state_dict().items()]
    assert [(k, v.shape) for k, v in bounded.state_dict().items()] == shapes
    with torch.no_grad():
        for pack in free.dcn_packs:
            pack.conv_offset.weight.normal_(0, 0.5)
            pack.conv_offset.bias.normal_(0, 3.0)
    bounded.load_state_dict(free.state_dict())
    x = torch.rand(1, 5, 3, 16, 16)
    with torch.no_grad():
        free_out, bounded_out = free(x), bounded(x)
    assert max(p.offset_stats.max_abs for p in free.dcn_packs) > 2.0
    assert all(p.max_offset == 2.0 and p.offset_stats.max_abs <= 2.0 for p in bounded.dcn_packs)
    assert not torch.allclose(free_out, bounded_out)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_part_sums_to_the_concatenating_convolution(stride):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 5, 3, stride, 1).double()
    a, b = torch.rand(2, 4, 9, 7, dtype=torch.float64), torch.rand(2, 4, 9, 7, dtype=torch.float64)
    with torch.no_grad():
        expected = conv(torch.cat((a, b), dim=1))
        torch.testing.assert_close(conv_part(conv, a, 0) + conv_part(conv, b, 1), expected, rtol=0, atol=1e-12)


def test_pcd_alignment_shares_each_references_part_among_its_neighbours():
    """B*T neighbours against B references (each reference's part computed once) align as
    against the reference repeated for every neighbour; a count that does not divide is refused."""
    torch.manual_seed(0)
    pcd = PCDAlignment(num_feat=8, deformable_groups=2).double()
    with torch.no_grad():
        for pack in dcn_packs(pcd):
            pack.conv_offset.weight.normal_(0, 0.05)
            pack.conv_offset.bias.normal_(0, 1.0)
    b, t = 2, 3
    nbr = [torch.rand(b * t, 8, 12 // 2**i, 8 // 2**i, dtype=torch.float64) for i in range(3)]
    ref = [torch.rand(b, 8, 12 // 2**i, 8 // 2**i, dtype=torch.float64) for i in range(3)]
    repeated = [r.repeat_interleave(t, dim=0) for r in ref]
    with torch.no_grad():
        torch.testing.assert_close(pcd(nbr, ref), pcd(nbr, repeated), rtol=0, atol=1e-12)
        with pytest.raises(ValueError, match="5 neighbours cannot be split among 2 references"):
            pcd([f[:5] for f in nbr], ref)
