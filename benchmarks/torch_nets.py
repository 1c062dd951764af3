"""PyTorch reference networks for the benchmarks (torchvision layout, no torchvision needed).

``build(arch, num_classes)`` returns an ``nn.Module`` whose ``forward(x)`` (NCHW float) gives
``(logits [B, M], features [B, K, h, w])``, the same networks as ``infocam_jax.models``:
ResNet50 with layer4 stride 1 (14x14x2048 at 224) and VGG16-GAP (VGG16 D without pool5, conv6
3x3 512->1024, GAP, Linear). Imported lazily by the benchmark scripts, only when torch is.
"""
import torch
from torch import nn

ARCHS = ("resnet50", "vgg16_gap")
_VGG16_GAP = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, 1024)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 (x4) with identity or projection shortcut."""

    def __init__(self, inp: int, width: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(inp, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width),
            nn.ReLU(True), nn.Conv2d(width, width * 4, 1, bias=False),
            nn.BatchNorm2d(width * 4))
        self.down = None
        if stride != 1 or inp != width * 4:
            self.down = nn.Sequential(nn.Conv2d(inp, width * 4, 1, stride, bias=False),
                                      nn.BatchNorm2d(width * 4))

    def forward(self, x):
        return torch.relu(self.body(x) + (x if self.down is None else self.down(x)))


class Net(nn.Module):
    """Backbone + GAP + Linear; ``forward`` returns ``(logits, features)``."""

    def __init__(self, arch: str, num_classes: int):
        super().__init__()
        if arch == "resnet50":
            layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),
                      nn.MaxPool2d(3, 2, 1)]
            inp = 64
            for n, width, stride in ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 1)):
                for i in range(n):
                    layers.append(Bottleneck(inp, width, stride if i == 0 else 1))
                    inp = width * 4
        elif arch == "vgg16_gap":
            layers, inp = [], 3
            for v in _VGG16_GAP:
                if v == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                else:
                    layers += [nn.Conv2d(inp, v, 3, padding=1), nn.ReLU(True)]
                    inp = v
        else:
            raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(inp, num_classes)

    def forward(self, x):
        f = self.features(x)
        return self.fc(f.mean(dim=(2, 3))), f


def build(arch: str, num_classes: int) -> nn.Module:
    """The PyTorch twin of ``infocam_jax.models.create(arch, num_classes)``."""
    return Net(arch, num_classes)
