"""Video-forecasting baselines: persistence, a frame-stacking UNet and a ConvLSTM.

Every model maps a context sequence ``x`` ``(B, T_in, C, H, W)`` to a forecast
``(B, T_out, C, H, W)`` — the interface of :class:`physml.models.earthformer.Earthformer` — so
:func:`physml.training.forecasting.train_forecaster` trains and compares any of them. Sizes are set
by ``base``/``depth`` (UNet) and ``hidden``/``layers`` (ConvLSTM); :func:`count_parameters` makes
comparisons at equal parameter counts easy (about 0.1–1 M parameters at the defaults' scale).

The learned baselines end with a sigmoid by default (``output="sigmoid"``), since the N-body
digits frames lie in [0, 1]; ``output="linear"`` gives a raw head like Earthformer's.
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from pdes.checks import finite

from .common import pad_circularly

OUTPUTS = ("sigmoid", "linear")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars (``requires_grad``) in ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def check_sequence(
    name: str, x: object, channels: int | None = None, frames: int | None = None
) -> torch.Tensor:
    """``x`` as a finite floating ``(B, T, C, H, W)`` tensor, with ``C == channels`` and
    ``T == frames`` when given; otherwise a ``TypeError``/``ValueError`` saying what was
    expected."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor (B, T, C, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.ndim != 5:
        raise ValueError(f"{name} must have shape (B, T, C, H, W), got {tuple(x.shape)}")
    if channels is not None and x.shape[2] != channels:
        raise ValueError(
            f"{name} must have {channels} channel(s) on axis 2 of (B, T, C, H, W), got "
            f"{tuple(x.shape)}"
        )
    if frames is not None and x.shape[1] != frames:
        raise ValueError(
            f"{name} must have {frames} frame(s) on axis 1 of (B, T, C, H, W), got {tuple(x.shape)}"
        )
    if min(x.shape) == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    finite(name, x)
    return x


def _count(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _odd_kernel(value: object) -> int:
    kernel = _count("kernel", value)
    if kernel % 2 == 0:
        raise ValueError(f"kernel must be odd to keep the frame size, got {value}")
    return kernel


def _output(value: str) -> str:
    if value not in OUTPUTS:
        raise ValueError(f"output must be one of {list(OUTPUTS)}, got {value!r}")
    return value


class Persistence(nn.Module):
    """Repeats the last context frame ``target_frames`` times: the no-skill reference forecast."""

    def __init__(self, target_frames: int) -> None:
        super().__init__()
        self.target_frames = _count("target_frames", target_frames)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Context ``x (B, T_in, C, H, W)`` → ``(B, target_frames, C, H, W)``."""
        x = check_sequence("x", x)
        return x[:, -1:].repeat(1, self.target_frames, 1, 1, 1)


def _conv_block(inputs: int, outputs: int) -> nn.Sequential:
    """Two 3×3 convolutions, each followed by group normalisation and GELU.

    The norm uses the largest group count up to 8 that divides ``outputs``, so any width works.
    """
    groups = max(g for g in range(1, 9) if outputs % g == 0)
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, padding=1),
        nn.GroupNorm(groups, outputs),
        nn.GELU(),
        nn.Conv2d(outputs, outputs, 3, padding=1),
        nn.GroupNorm(groups, outputs),
        nn.GELU(),
    )


class UNet(nn.Module):
    """A 2-D UNet that sees the context frames as channels and emits all target frames at once.

    ``(B, T_in, C, H, W)`` → stack to ``(B, T_in·C, H, W)`` → ``depth`` levels of
    (conv block, 2× max-pool) with ``base·2^level`` channels, a bottleneck, transposed-conv
    upsampling with skip connections → ``(B, T_out, C, H, W)``, with ``T_in = in_frames``,
    ``T_out = out_frames`` and ``C = channels``. ``H`` and ``W`` must be divisible by
    ``2^depth``. Parameters grow like ``base²·4^depth`` (base 16, depth 2 ≈ 0.12 M).
    ``periodic``: the convolutions pad circularly (fields on a periodic domain).
    ``output``: ``"sigmoid"`` (default) squashes every output value into (0, 1), for frames that
    lie in [0, 1] such as the N-body digits; ``"linear"`` leaves the head raw.
    """

    @staticmethod
    def frame_multiple(depth: int) -> int:
        """What ``H`` and ``W`` must be multiples of: ``2^depth`` (one halving per level)."""
        return 2**depth

    def __init__(
        self,
        in_frames: int,
        out_frames: int,
        channels: int = 1,
        base: int = 16,
        depth: int = 2,
        output: str = "sigmoid",
        periodic: bool = False,
    ) -> None:
        super().__init__()
        self.in_frames = _count("in_frames", in_frames)
        self.out_frames = _count("out_frames", out_frames)
        self.channels = _count("channels", channels)
        self.depth = _count("depth", depth, minimum=0)
        self.output = _output(output)
        width = [_count("base", base) * 2**level for level in range(self.depth + 1)]
        self.down = nn.ModuleList()
        previous = self.in_frames * self.channels
        for level in range(self.depth):
            self.down.append(_conv_block(previous, width[level]))
            previous = width[level]
        self.bottleneck = _conv_block(previous, width[-1])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for level in reversed(range(self.depth)):
            self.up.append(nn.ConvTranspose2d(width[level + 1], width[level], 2, stride=2))
            self.merge.append(_conv_block(2 * width[level], width[level]))
        self.head = nn.Conv2d(width[0], self.out_frames * self.channels, 1)
        self.periodic = pad_circularly(self, periodic)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_sequence("x", x, self.channels, self.in_frames).to(self.head.weight.dtype)
        batch, _, _, height, width = x.shape
        multiple = self.frame_multiple(self.depth)
        if height % multiple or width % multiple:
            raise ValueError(
                f"x must have H and W divisible by 2^depth={multiple}, got {tuple(x.shape)}"
            )
        h = x.reshape(batch, -1, height, width)
        skips = []
        for block in self.down:
            h = block(h)
            skips.append(h)
            h = self.pool(h)
        h = self.bottleneck(h)
        for upsample, merge, skip in zip(self.up, self.merge, reversed(skips), strict=True):
            h = merge(torch.cat([upsample(h), skip], dim=1))
        h = self.head(h)
        if self.output == "sigmoid":
            h = torch.sigmoid(h)
        return h.reshape(batch, self.out_frames, self.channels, height, width)


class ConvLSTMCell(nn.Module):
    """One convolutional LSTM cell (Shi et al. 2015): the LSTM gates are ``k×k`` convolutions
    (``k = kernel``, odd) of ``[input, hidden]``; input ``(B, inputs, H, W)``, hidden and cell
    states ``(B, hidden, H, W)``."""

    def __init__(self, inputs: int, hidden: int, kernel: int) -> None:
        super().__init__()
        inputs, kernel = _count("inputs", inputs), _odd_kernel(kernel)
        self.hidden = hidden = _count("hidden", hidden)
        self.gates = nn.Conv2d(inputs + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ConvLSTM(nn.Module):
    """Encoder–forecaster ConvLSTM: encode the context, then roll out the forecast.

    Frames ``(B, T_in, channels, H, W)`` are first folded into ``patch × patch`` blocks (pixel
    unshuffle) so the recurrent cells run at ``H/patch × W/patch``. An encoder stack of ``layers``
    cells reads the ``T_in`` frames; a forecaster stack with its own weights starts from the
    encoder's states and produces ``target_frames`` frames one at a time, each step fed its own
    previous prediction (the last context frame first) — no teacher forcing, in training or at test
    time. A 1×1 convolution and pixel shuffle map the top hidden state back to a frame. ``H`` and
    ``W`` must be divisible by ``patch``; the default 4 is Shi et al.'s 64×64 → 16×16. Parameters ≈
    ``2·layers·4·hidden·2·hidden·kernel²`` (hidden 32, 2 layers ≈ 0.26 M; hidden 64 ≈ 0.96 M),
    ``kernel`` the gates' odd convolution size.
    ``periodic``: the gates' convolutions pad circularly (fields on a periodic domain; folding
    into patches keeps the periodicity).
    ``output``: ``"sigmoid"`` (default) squashes every predicted frame into (0, 1), and that
    squashed frame is what the next step is fed, for frames that lie in [0, 1] such as the N-body
    digits; ``"linear"`` leaves the head raw.
    """

    @staticmethod
    def frame_multiple(patch: int) -> int:
        """What ``H`` and ``W`` must be multiples of: ``patch`` (the fold into blocks); the
        forecast models' shared rule, which the command line's ``--nx`` hint reads."""
        return patch

    def __init__(
        self,
        channels: int = 1,
        hidden: int = 32,
        layers: int = 2,
        kernel: int = 3,
        target_frames: int = 10,
        patch: int = 4,
        output: str = "sigmoid",
        periodic: bool = False,
    ) -> None:
        super().__init__()
        self.channels = _count("channels", channels)
        self.hidden = _count("hidden", hidden)
        self.layers = _count("layers", layers)
        self.kernel = _odd_kernel(kernel)
        self.target_frames = _count("target_frames", target_frames)
        self.patch = _count("patch", patch)
        self.output = _output(output)
        folded = self.channels * self.patch**2

        def stack() -> nn.ModuleList:
            sizes = [folded] + [self.hidden] * (self.layers - 1)
            return nn.ModuleList(ConvLSTMCell(s, self.hidden, self.kernel) for s in sizes)

        self.encoder = stack()
        self.forecaster = stack()
        self.head = nn.Conv2d(self.hidden, folded, 1)
        self.fold = nn.PixelUnshuffle(self.patch)
        self.unfold = nn.PixelShuffle(self.patch)
        self.periodic = pad_circularly(self, periodic)

    @staticmethod
    def _step(
        cells: nn.ModuleList, x: torch.Tensor, states: list[tuple[torch.Tensor, torch.Tensor]]
    ) -> torch.Tensor:
        for level, cell in enumerate(cells):
            states[level] = cell(x, states[level])
            x = states[level][0]
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_sequence("x", x, self.channels).to(self.head.weight.dtype)
        batch, steps, _, height, width = x.shape
        multiple = self.frame_multiple(self.patch)
        if height % multiple or width % multiple:
            raise ValueError(
                f"x must have H and W divisible by patch={multiple}, got {tuple(x.shape)}"
            )
        folded = self.fold(x.reshape(batch * steps, self.channels, height, width))
        folded = folded.reshape(batch, steps, *folded.shape[1:])
        zeros = folded.new_zeros(batch, self.hidden, *folded.shape[-2:])
        states = [(zeros, zeros) for _ in range(self.layers)]
        for t in range(steps):
            self._step(self.encoder, folded[:, t], states)
        frame, outputs = folded[:, -1], []
        for _ in range(self.target_frames):
            frame = self.head(self._step(self.forecaster, frame, states))
            if self.output == "sigmoid":
                frame = torch.sigmoid(frame)
            outputs.append(frame)
        forecast = self.unfold(torch.stack(outputs, 1).flatten(0, 1))
        return forecast.reshape(batch, self.target_frames, self.channels, height, width)
