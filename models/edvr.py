"""EDVR: Video Restoration with Enhanced Deformable Convolutional Networks.

Numerically the reference EDVR (Wang et al., 2019, as maintained in BasicSR): same
parameter names and shapes (so BasicSR checkpoints load unchanged), same outputs.
The reference parameter names and shapes are in ``tests/reference/edvr_*_state_dict.txt``.

Flow: per-frame features (L1, then an L2/L3 pyramid) -> PCD alignment of every
frame to the centre frame -> fusion (TSA or a 1x1 conv) -> residual
reconstruction -> two pixel-shuffle x2 -> + bilinear x4 of the centre frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ops.dcn import DCNv2Pack, dcn_packs

from .blocks import ResidualBlockNoBN, conv1x1, conv3x3, conv_part, lrelu, residual_blocks, upsample2x

LEVELS = ("l3", "l2", "l1")  # coarse to fine


class PCDAlignment(nn.Module):
    """Pyramid, Cascading and Deformable alignment of neighbour features to the reference.

    ``forward(nbr_feat_l, ref_feat_l)``: lists [L1, L2, L3] of (N, F, H/2^i, W/2^i) features of
    the neighbour frames and (R, F, H/2^i, W/2^i) of the reference frames, N a multiple of R:
    neighbour n is aligned to reference n // (N / R); returns aligned (N, F, H, W). R = N aligns
    pairs; N = B*T neighbours and R = B references align every frame of B clips to its clip's
    centre frame at once.

    The offset convolutions that see ``cat(neighbour, reference)`` (``offset_conv1`` per level,
    ``cas_offset_conv1``) are computed as a neighbour part plus a reference part
    (``conv_part``): the reference's part (``reference_terms``) is computed once for all its
    neighbours, and no concatenation is made. Same parameters and, up to rounding, the same
    result as the reference's concatenating convolutions.
    """

    def __init__(self, num_feat: int = 64, deformable_groups: int = 8, dcn_backend: str | None = None,
                 max_offset: float | None = None):
        super().__init__()
        dcn = dict(kernel_size=3, padding=1, deformable_groups=deformable_groups, backend=dcn_backend,
                   max_offset=max_offset)
        self.offset_conv1 = nn.ModuleDict()
        self.offset_conv2 = nn.ModuleDict()
        self.offset_conv3 = nn.ModuleDict()
        self.dcn_pack = nn.ModuleDict()
        self.feat_conv = nn.ModuleDict()
        for level in LEVELS:
            self.offset_conv1[level] = conv3x3(num_feat * 2, num_feat)
            if level == "l3":
                self.offset_conv2[level] = conv3x3(num_feat, num_feat)
            else:
                self.offset_conv2[level] = conv3x3(num_feat * 2, num_feat)
                self.offset_conv3[level] = conv3x3(num_feat, num_feat)
            self.dcn_pack[level] = DCNv2Pack(num_feat, num_feat, **dcn)
            if level != "l3":
                self.feat_conv[level] = conv3x3(num_feat * 2, num_feat)
        self.cas_offset_conv1 = conv3x3(num_feat * 2, num_feat)
        self.cas_offset_conv2 = conv3x3(num_feat, num_feat)
        self.cas_dcnpack = DCNv2Pack(num_feat, num_feat, **dcn)

    def forward(self, nbr_feat_l: list[Tensor], ref_feat_l: list[Tensor]) -> Tensor:
        return self.align(nbr_feat_l, self.reference_terms(ref_feat_l))

    def reference_terms(self, ref_feat_l: list[Tensor]) -> list[Tensor]:
        """The references' parts of ``offset_conv1`` at L3, L2, L1 and of ``cas_offset_conv1``:
        four (R, F, h, w) tensors, what ``align`` adds to each neighbour's parts."""
        terms = [conv_part(self.offset_conv1[level], ref_feat_l[index], 1) for index, level in zip((2, 1, 0), LEVELS)]
        return [*terms, conv_part(self.cas_offset_conv1, ref_feat_l[0], 1)]

    def align(self, nbr_feat_l: list[Tensor], ref_terms: list[Tensor]) -> Tensor:
        """Neighbour pyramids (N, F, ...) aligned to the references whose ``reference_terms`` are
        given ((R, F, ...), N a multiple of R): (N, F, H, W)."""
        up_offset = up_feat = None
        for index, level, ref_term in zip((2, 1, 0), LEVELS, ref_terms):
            nbr = nbr_feat_l[index]
            offset = lrelu(plus_reference(conv_part(self.offset_conv1[level], nbr, 0), ref_term))
            if level == "l3":
                offset = lrelu(self.offset_conv2[level](offset))
            else:
                offset = lrelu(self.offset_conv2[level](torch.cat((offset, up_offset), dim=1)))
                offset = lrelu(self.offset_conv3[level](offset))
            feat = self.dcn_pack[level](nbr, offset)
            if level != "l3":
                feat = self.feat_conv[level](torch.cat((feat, up_feat), dim=1))
            if level != "l1":
                feat = lrelu(feat)
                # "offset" is a feature map, not raw offsets: x2 keeps its scale per level.
                up_offset = upsample2x(offset) * 2
                up_feat = upsample2x(feat)
        offset = lrelu(plus_reference(conv_part(self.cas_offset_conv1, feat, 0), ref_terms[3]))
        offset = lrelu(self.cas_offset_conv2(offset))
        return lrelu(self.cas_dcnpack(feat, offset))


def plus_reference(nbr_term: Tensor, ref_term: Tensor) -> Tensor:
    """(N, ...) neighbour terms + (R, ...) reference terms, N a multiple of R: term n gets
    reference term n // (N / R) (broadcast, no copy of the reference terms)."""
    n, r = nbr_term.shape[0], ref_term.shape[0]
    if n == r:
        return nbr_term + ref_term
    if r == 0 or n % r:
        raise ValueError(f"PCD alignment: {n} neighbours cannot be split among {r} references")
    return (nbr_term.unflatten(0, (r, -1)) + ref_term.unsqueeze(1)).flatten(0, 1)


class TSAFusion(nn.Module):
    """Temporal and Spatial Attention fusion: (B, T, F, H, W) -> (B, F, H, W).

    H and W must be multiples of 4 (two stride-2 pools and two x2 upsamplings).
    """

    def __init__(self, num_feat: int = 64, num_frame: int = 5, center_frame_idx: int = 2):
        super().__init__()
        self.center_frame_idx = center_frame_idx
        # temporal attention
        self.temporal_attn1 = conv3x3(num_feat, num_feat)
        self.temporal_attn2 = conv3x3(num_feat, num_feat)
        self.feat_fusion = conv1x1(num_frame * num_feat, num_feat)
        # spatial attention
        self.max_pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.avg_pool = nn.AvgPool2d(3, stride=2, padding=1)
        self.spatial_attn1 = conv1x1(num_frame * num_feat, num_feat)
        self.spatial_attn2 = conv1x1(num_feat * 2, num_feat)
        self.spatial_attn3 = conv3x3(num_feat, num_feat)
        self.spatial_attn4 = conv1x1(num_feat, num_feat)
        self.spatial_attn5 = conv3x3(num_feat, num_feat)
        self.spatial_attn_l1 = conv1x1(num_feat, num_feat)
        self.spatial_attn_l2 = conv3x3(num_feat * 2, num_feat)
        self.spatial_attn_l3 = conv3x3(num_feat, num_feat)
        self.spatial_attn_add1 = conv1x1(num_feat, num_feat)
        self.spatial_attn_add2 = conv1x1(num_feat, num_feat)

    def _pool(self, x: Tensor) -> Tensor:
        """cat(maxpool, avgpool): (N, F, H, W) -> (N, 2F, H/2, W/2)."""
        return torch.cat((self.max_pool(x), self.avg_pool(x)), dim=1)

    def forward(self, aligned_feat: Tensor) -> Tensor:
        embedding_ref = self.temporal_attn1(aligned_feat[:, self.center_frame_idx])
        weighted = torch.cat([self.weight_frame(aligned_feat[:, i], embedding_ref)
                              for i in range(aligned_feat.shape[1])], dim=1)  # (B, T*F, H, W)
        return self.attend(self.feat_fusion(weighted), self.spatial_attn1(weighted))

    def stream(self, frames: Iterable[tuple[int, Tensor]]) -> Tensor:
        """``forward`` fed one aligned frame at a time: ``frames`` yields (index, (B, F, H, W)),
        the reference frame first. Each weighted frame is folded into ``feat_fusion`` and
        ``spatial_attn1`` as its slice of their weights, so the (B, T*F, H, W) stack never
        exists. Same result as ``forward`` up to float rounding (sums in another order)."""
        sums, embedding_ref = None, None
        for index, frame in frames:
            if embedding_ref is None:
                if index != self.center_frame_idx:
                    raise ValueError(f"TSAFusion.stream: the reference frame {self.center_frame_idx} comes first, "
                                     f"got frame {index}")
                embedding_ref = self.temporal_attn1(frame)
            sums = fold_frame((self.feat_fusion, self.spatial_attn1), self.weight_frame(frame, embedding_ref),
                              index, sums)
        return self.attend(*finish_folds((self.feat_fusion, self.spatial_attn1), sums))

    def weight_frame(self, frame: Tensor, embedding_ref: Tensor) -> Tensor:
        """Temporal attention of one aligned frame, (N, F, H, W): the frame times the sigmoid of its
        per-pixel similarity to the reference (``embedding_ref = temporal_attn1(reference)``)."""
        return frame * torch.sigmoid((self.temporal_attn2(frame) * embedding_ref).sum(dim=1, keepdim=True))

    def attend(self, fused: Tensor, attn: Tensor) -> Tensor:
        """Spatial attention (two pyramid levels) from ``feat_fusion`` and ``spatial_attn1`` of the
        weighted frames (before their activations), both (N, F, H, W) -> (N, F, H, W)."""
        feat = lrelu(fused)
        attn = lrelu(attn)
        attn = lrelu(self.spatial_attn2(self._pool(attn)))
        attn_level = lrelu(self.spatial_attn_l1(attn))
        attn_level = lrelu(self.spatial_attn_l2(self._pool(attn_level)))
        attn_level = upsample2x(lrelu(self.spatial_attn_l3(attn_level)))
        attn = lrelu(self.spatial_attn3(attn)) + attn_level
        attn = lrelu(self.spatial_attn4(attn))
        attn = self.spatial_attn5(upsample2x(attn))
        attn_add = self.spatial_attn_add2(lrelu(self.spatial_attn_add1(attn)))
        return feat * torch.sigmoid(attn) * 2 + attn_add


class ConvFusion(nn.Conv2d):
    """Fusion without TSA: one 1x1 convolution over the T stacked frames, (B, T, F, H, W) -> (B, F, H, W).

    A ``Conv2d`` (parameters ``weight``, ``bias``, as the reference's ``fusion``) that also takes
    the frames one at a time (``stream``)."""

    def __init__(self, num_feat: int = 64, num_frame: int = 5):
        super().__init__(num_frame * num_feat, num_feat, kernel_size=1)

    def forward(self, aligned_feat: Tensor) -> Tensor:
        return super().forward(aligned_feat.flatten(1, 2))

    def stream(self, frames: Iterable[tuple[int, Tensor]]) -> Tensor:
        """``forward`` fed one aligned frame at a time ((index, (B, F, H, W)) pairs, any order)."""
        sums = None
        for index, frame in frames:
            sums = fold_frame((self,), frame, index, sums)
        return finish_folds((self,), sums)[0]


def fold_frame(convs: Sequence[nn.Conv2d], frame: Tensor, index: int, sums: list[Tensor] | None) -> list[Tensor]:
    """Add what frame ``index`` ((N, F, H, W)) contributes to each 1x1 convolution over T frames'
    stacked (N, T*F, H, W) features (the frame's slice of the weight, no bias) to ``sums``
    (None: start them). Sums are kept in float32 at least (parts are bf16 under autocast)."""
    f = frame.shape[1]
    parts = [F.conv2d(frame, conv.weight[:, index * f : (index + 1) * f]) for conv in convs]
    if sums is None:
        return [part.to(torch.promote_types(part.dtype, torch.float32)) for part in parts]
    for total, part in zip(sums, parts):
        total.add_(part)
    return sums


def finish_folds(convs: Sequence[nn.Conv2d], sums: list[Tensor] | None) -> list[Tensor]:
    """The folded sums plus each convolution's bias: the convolutions' outputs."""
    if sums is None:
        raise ValueError("no frames were fused")
    return [total.add_(conv.bias.view(1, -1, 1, 1)) for total, conv in zip(sums, convs)]


class Predeblur(nn.Module):
    """Pre-deblurring module: (N, C_in, H, W) -> (N, F, H, W), or (N, F, H/4, W/4) with hr_in.

    State-dict prefix ``predeblur.`` as the reference (its ``PredeblurModule``).
    """

    def __init__(self, num_in_ch: int = 3, num_feat: int = 64, hr_in: bool = False):
        super().__init__()
        self.hr_in = hr_in
        self.conv_first = conv3x3(num_in_ch, num_feat)
        if hr_in:
            self.stride_conv_hr1 = conv3x3(num_feat, num_feat, stride=2)
            self.stride_conv_hr2 = conv3x3(num_feat, num_feat, stride=2)
        self.stride_conv_l2 = conv3x3(num_feat, num_feat, stride=2)
        self.stride_conv_l3 = conv3x3(num_feat, num_feat, stride=2)
        self.resblock_l3 = ResidualBlockNoBN(num_feat)
        self.resblock_l2_1 = ResidualBlockNoBN(num_feat)
        self.resblock_l2_2 = ResidualBlockNoBN(num_feat)
        self.resblock_l1 = nn.ModuleList(ResidualBlockNoBN(num_feat) for _ in range(5))

    def forward(self, x: Tensor) -> Tensor:
        feat_l1 = lrelu(self.conv_first(x))
        if self.hr_in:
            feat_l1 = lrelu(self.stride_conv_hr2(lrelu(self.stride_conv_hr1(feat_l1))))
        feat_l2 = lrelu(self.stride_conv_l2(feat_l1))
        feat_l3 = lrelu(self.stride_conv_l3(feat_l2))

        feat_l3 = upsample2x(self.resblock_l3(feat_l3))
        feat_l2 = upsample2x(self.resblock_l2_2(self.resblock_l2_1(feat_l2) + feat_l3))
        feat_l1 = self.resblock_l1[1](self.resblock_l1[0](feat_l1)) + feat_l2
        for block in self.resblock_l1[2:]:
            feat_l1 = block(feat_l1)
        return feat_l1


class EDVR(nn.Module):
    """EDVR video restoration network.

    Input (B, T, C_in, H, W) in [0, 1]; output (B, C_out, 4H, 4W), or (B, C_out, H, W)
    with ``hr_in`` (deblurring: the network works at H/4 inside and restores full size).
    H and W must be multiples of 4 (16 with ``hr_in``).

    Args (the reference's names and defaults; EDVR-M = defaults, EDVR-L = num_feat 128,
    num_reconstruct_block 40):
        num_in_ch, num_out_ch: image channels in and out.
        num_feat: feature channels F.
        num_frame: frames per input window T.
        deformable_groups: DCN offset groups G (F must be divisible by G).
        num_extract_block, num_reconstruct_block: residual blocks before / after fusion.
        center_frame_idx: index of the reference frame (None: T // 2).
        hr_in: input at output resolution (deblurring); needs ``with_predeblur``.
        with_predeblur: the pre-deblurring module replaces the first conv.
        with_tsa: TSA fusion; False fuses with one 1x1 conv.
        dcn_backend: DCN backend for every DCNv2Pack (None: ``$VIDRESTORE_DCN`` or auto).
        max_offset: bound of every DCN offset in pixels, as ``max_offset * tanh(o / max_offset)``
            (None: unbounded, the reference; BasicSR weights give their outputs only with None).
    """

    def __init__(
        self,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        num_feat: int = 64,
        num_frame: int = 5,
        deformable_groups: int = 8,
        num_extract_block: int = 5,
        num_reconstruct_block: int = 10,
        center_frame_idx: int | None = None,
        hr_in: bool = False,
        with_predeblur: bool = False,
        with_tsa: bool = True,
        dcn_backend: str | None = None,
        max_offset: float | None = None,
    ):
        super().__init__()
        center_frame_idx = num_frame // 2 if center_frame_idx is None else center_frame_idx
        if not 0 <= center_frame_idx < num_frame:
            raise ValueError(f"center_frame_idx: expected 0 <= index < num_frame={num_frame}, got {center_frame_idx}")
        if num_feat % deformable_groups:
            raise ValueError(f"num_feat ({num_feat}) must be divisible by deformable_groups ({deformable_groups})")
        if hr_in and not with_predeblur:
            raise ValueError(
                "hr_in=True needs with_predeblur=True: the predeblur module is what reduces "
                "the input resolution 4x"
            )
        self.num_in_ch = num_in_ch
        self.num_frame = num_frame
        self.center_frame_idx = center_frame_idx
        self.hr_in = hr_in
        self.with_predeblur = with_predeblur
        self.with_tsa = with_tsa

        # feature extraction
        if with_predeblur:
            self.predeblur = Predeblur(num_in_ch, num_feat, hr_in=hr_in)
            self.conv_1x1 = conv1x1(num_feat, num_feat)
        else:
            self.conv_first = conv3x3(num_in_ch, num_feat)
        self.feature_extraction = residual_blocks(num_extract_block, num_feat)
        self.conv_l2_1 = conv3x3(num_feat, num_feat, stride=2)
        self.conv_l2_2 = conv3x3(num_feat, num_feat)
        self.conv_l3_1 = conv3x3(num_feat, num_feat, stride=2)
        self.conv_l3_2 = conv3x3(num_feat, num_feat)

        self.pcd_align = PCDAlignment(num_feat, deformable_groups, dcn_backend, max_offset)
        if with_tsa:
            self.fusion = TSAFusion(num_feat, num_frame, center_frame_idx)
        else:
            self.fusion = ConvFusion(num_feat, num_frame)

        # reconstruction and x4 upsampling
        self.reconstruction = residual_blocks(num_reconstruct_block, num_feat)
        self.upconv1 = conv3x3(num_feat, num_feat * 4)
        self.upconv2 = conv3x3(num_feat, 64 * 4)
        self.conv_hr = conv3x3(64, 64)
        self.conv_last = conv3x3(64, num_out_ch)

    @property
    def scale(self) -> int:
        """Output size / input size: 4 (super-resolution), 1 with ``hr_in`` (deblurring)."""
        return 1 if self.hr_in else 4

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this: 4 (two stride-2 levels), 16 with ``hr_in``."""
        return 16 if self.hr_in else 4

    @property
    def dcn_packs(self) -> list[DCNv2Pack]:
        """The four DCNv2Packs (L3, L2, L1, cascade), e.g. to read their offset magnitudes."""
        return dcn_packs(self)

    def _check_input(self, x: Tensor) -> None:
        if x.dim() != 5:
            raise ValueError(f"EDVR input: expected (B, T, C, H, W), got shape {tuple(x.shape)}")
        _, t, c, h, w = x.shape
        if t != self.num_frame or c != self.num_in_ch:
            raise ValueError(
                f"EDVR input: expected T={self.num_frame} frames of C={self.num_in_ch} channels "
                f"(B, T, C, H, W), got shape {tuple(x.shape)}"
            )
        multiple = self.size_multiple
        if h % multiple or w % multiple:
            raise ValueError(
                f"EDVR input: H and W must be multiples of {multiple}"
                f"{' (hr_in)' if self.hr_in else ''}, got {h}x{w}; pad the frames (e.g. reflect) "
                "and crop the output"
            )

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        b, t = x.shape[:2]
        pyramid = self.extract_features(x.flatten(0, 1))
        # PCD: align every frame (the centre one too) to its clip's centre frame, all B*T at once
        ref = [feat.unflatten(0, (b, t))[:, self.center_frame_idx] for feat in pyramid]
        aligned = self.pcd_align(pyramid, ref)
        feat = self.fusion(aligned.unflatten(0, (b, t)))
        return self._reconstruct(feat, x[:, self.center_frame_idx])

    def extract_features(self, frames: Tensor) -> list[Tensor]:
        """Feature pyramid of independent frames: (N, C, H, W) -> [L1, L2, L3], (N, F, h/2^i, w/2^i).

        h, w = H, W (H/4, W/4 with hr_in). Each frame's pyramid depends on that frame only,
        so a frame shared by several windows needs it computed once (see ``restore_from_features``).
        """
        if self.with_predeblur:
            feat_l1 = self.conv_1x1(self.predeblur(frames))
        else:
            feat_l1 = lrelu(self.conv_first(frames))
        feat_l1 = self.feature_extraction(feat_l1)
        feat_l2 = lrelu(self.conv_l2_2(lrelu(self.conv_l2_1(feat_l1))))
        feat_l3 = lrelu(self.conv_l3_2(lrelu(self.conv_l3_1(feat_l2))))
        return [feat_l1, feat_l2, feat_l3]

    def restore_from_features(self, pyramids: Sequence[list[Tensor]], x_center: Tensor,
                              strip_rows: int | None = None) -> Tensor:
        """The rest of ``forward`` from precomputed pyramids, streaming one frame at a time.

        ``pyramids``: T pyramids ``extract_features`` made, each [L1, L2, L3] of (B, F, h, w)
        (one per window position); ``x_center``: the centre input frames, (B, C, H, W).
        Frames are aligned one by one (reference first) and fed to the fusion's ``stream``, so
        the (B, T, F, h, w) stack never exists. With ``strip_rows`` the upsampling runs on
        horizontal strips of that many feature rows (with enough context rows that the result
        is unchanged), so no full-size 64-channel activation exists at once. Same result as
        ``forward`` up to float rounding (the fusion's sums are taken in another order).
        """
        if len(pyramids) != self.num_frame:
            raise ValueError(f"restore_from_features: expected {self.num_frame} pyramids, got {len(pyramids)}")
        centre = self.center_frame_idx
        order = [centre] + [i for i in range(self.num_frame) if i != centre]
        ref_terms = self.pcd_align.reference_terms(pyramids[centre])  # once for the T neighbours
        aligned = ((i, self.pcd_align.align(pyramids[i], ref_terms)) for i in order)  # one frame at a time
        return self._reconstruct(self.fusion.stream(aligned), x_center, strip_rows)

    def _reconstruct(self, feat: Tensor, x_center: Tensor, strip_rows: int | None = None) -> Tensor:
        """Fused features (B, F, h, w) and centre frames (B, C, H, W) -> output (B, C_out, 4h, 4w)."""
        feat = self.reconstruction(feat)
        if strip_rows is None:
            out = self._upsample(feat)
        else:
            out = torch.cat([self._upsample(feat[..., top:bottom, :])[..., 4 * (core - top) : 4 * (core_end - top), :]
                             for (core, core_end), (top, bottom) in upsample_strips(feat.shape[-2], strip_rows)],
                            dim=-2)
        if self.hr_in:
            base = x_center
        else:
            base = F.interpolate(x_center, scale_factor=4, mode="bilinear", align_corners=False)
        return out + base

    def _upsample(self, feat: Tensor) -> Tensor:
        """Residual of the output from reconstructed features: (B, F, h, w) -> (B, C_out, 4h, 4w)."""
        # In-place activations: each input is a fresh tensor nothing else reads (as the reference).
        out = lrelu(F.pixel_shuffle(self.upconv1(feat), 2), inplace=True)
        out = lrelu(F.pixel_shuffle(self.upconv2(out), 2), inplace=True)
        out = lrelu(self.conv_hr(out), inplace=True)
        return self.conv_last(out)


# The upsampling tail's reach, in feature rows: upconv1 (3x3 at 1x), upconv2 (3x3 at 2x), conv_hr
# and conv_last (3x3 at 4x) see 1 + 1/2 + 1/4 + 1/4 = 2 rows either side.
UPSAMPLE_REACH = 2


def upsample_strips(height: int, rows: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """[((core_top, core_bottom), (top, bottom))]: cores of ``rows`` feature rows partitioning
    ``height``, each grown by ``UPSAMPLE_REACH`` rows (clipped to the frame) so the core is exact."""
    if rows < 1:
        raise ValueError(f"strip_rows must be at least 1, got {rows}")
    return [((top, min(top + rows, height)), (max(top - UPSAMPLE_REACH, 0), min(top + rows + UPSAMPLE_REACH, height)))
            for top in range(0, height, rows)]


def edvr_config_from_state_dict(state_dict: dict) -> dict:
    """EDVR constructor arguments read off a state dict's keys and shapes (e.g. a BasicSR file).

    ``center_frame_idx`` cannot be seen in the weights: the default (num_frame // 2) is assumed.
    """
    def shape(key: str) -> tuple[int, ...]:
        if key not in state_dict:
            raise ValueError(f"not an EDVR state dict: key {key!r} is missing")
        return tuple(state_dict[key].shape)

    def count_blocks(prefix: str) -> int:
        return len({k.split(".")[1] for k in state_dict if k.startswith(prefix + ".")})

    with_predeblur = "predeblur.conv_first.weight" in state_dict
    num_feat, num_in_ch = shape("predeblur.conv_first.weight" if with_predeblur else "conv_first.weight")[:2]
    with_tsa = "fusion.temporal_attn1.weight" in state_dict
    fusion_in = shape("fusion.feat_fusion.weight" if with_tsa else "fusion.weight")[1]
    kernel_points = 9
    return {
        "num_in_ch": num_in_ch,
        "num_out_ch": shape("conv_last.weight")[0],
        "num_feat": num_feat,
        "num_frame": fusion_in // num_feat,
        "deformable_groups": shape("pcd_align.dcn_pack.l1.conv_offset.weight")[0] // (3 * kernel_points),
        "num_extract_block": count_blocks("feature_extraction"),
        "num_reconstruct_block": count_blocks("reconstruction"),
        "hr_in": "predeblur.stride_conv_hr1.weight" in state_dict,
        "with_predeblur": with_predeblur,
        "with_tsa": with_tsa,
    }
