"""PyTorch twins of the WSOL VGG16-GAP and ResNet50 (torchvision layout, no torchvision needed),
for the parity tests of tests/test_convert.py and tests/test_posthoc.py.

Needs torch: importing this module without it skips the importing test (``importorskip``).
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: PyTorch twins skipped")

from test_convert import RESNET50_LAYERS, VGG16_CFG

tnn = torch.nn


class TorchVGG16GAP(tnn.Module):
    """torchvision vgg16 features without pool5, conv6 + ReLU, GAP, fc."""

    def __init__(self, num_classes):
        super().__init__()
        layers, inp = [], 3
        for v in VGG16_CFG:
            if v == "M":
                layers.append(tnn.MaxPool2d(2, 2))
            else:
                layers += [tnn.Conv2d(inp, v, 3, padding=1), tnn.ReLU(inplace=True)]
                inp = v
        self.features = tnn.Sequential(*layers)
        self.conv6 = tnn.Conv2d(512, 1024, 3, padding=1)
        self.fc = tnn.Linear(1024, num_classes)

    def forward(self, x):
        f = torch.relu(self.conv6(self.features(x)))
        return self.fc(f.mean(dim=(2, 3))), f

class TorchBottleneck(tnn.Module):
    def __init__(self, inp, width, stride):
        super().__init__()
        self.conv1 = tnn.Conv2d(inp, width, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(width)
        self.conv2 = tnn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(width)
        self.conv3 = tnn.Conv2d(width, width * 4, 1, bias=False)
        self.bn3 = tnn.BatchNorm2d(width * 4)
        self.downsample = None
        if stride != 1 or inp != width * 4:
            self.downsample = tnn.Sequential(
                tnn.Conv2d(inp, width * 4, 1, stride, bias=False), tnn.BatchNorm2d(width * 4))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + identity)

class TorchResNet50(tnn.Module):
    """torchvision resnet50 layout with layer4 stride 1."""

    def __init__(self, num_classes):
        super().__init__()
        self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = tnn.BatchNorm2d(64)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        inp = 64
        for L, (n, width, stride) in enumerate(RESNET50_LAYERS, start=1):
            blocks = []
            for i in range(n):
                blocks.append(TorchBottleneck(inp, width, stride if i == 0 else 1))
                inp = width * 4
            setattr(self, f"layer{L}", tnn.Sequential(*blocks))
        self.fc = tnn.Linear(2048, num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for L in range(1, 5):
            x = getattr(self, f"layer{L}")(x)
        return self.fc(x.mean(dim=(2, 3))), x


def load_torch(net, state):
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()
                         if not k.startswith("classifier")})
    return net
