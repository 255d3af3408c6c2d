"""PyTorch reference definitions of the kdjax zoo, for the parity fixtures (not used by kdjax).

Re-implementations, written for this repository, of

* the 22 CIFAR constructors of HobbitLong/RepDistiller ``models/`` (resnet.py, resnetv2.py,
  wrn.py, vgg.py (``*_bn``), mobilenetv2.py (``mobile_half``), ShuffleNetv1.py, ShuffleNetv2.py),
* torchvision's ResNet18/34/50/101/152 (v1.5: stride on the Bottleneck's 3x3 conv),
* mdistiller's ImageNet MobileNetV1 (``mdistiller/models/imagenet/mobilenetv1.py``).

Module and parameter names reproduce the originals' ``state_dict`` keys exactly (that is what the
importer maps). Every model has RepDistiller's ``forward(x, is_feat=False, preact=False)``: with
``is_feat`` it returns ``([f0, f1, ..., fN, pooled], logits)``; ``preact`` swaps the stage
features for their pre-activation versions where the original supports it. For the ImageNet models
(which use mdistiller's dict protocol upstream) the list is ``[stem, stage1..4, pooled]`` built from
mdistiller's ``feats``/``preact_feats`` semantics. Initialisation does not matter: the fixture
generator overwrites every parameter and buffer.

Deviations (documented, equivalent where the originals run): fixed-size pools
(``AvgPool2d(8)``, ``avg_pool2d(4)``, MobileNetV2's ``AvgPool2d(2, ceil_mode=True)``, MobileNetV1's
``AvgPool2d(7)``) are global averages, which is what they compute at the originals' input sizes;
this lets the ImageNet models run on 64x64 fixture inputs.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _gap(x):
  return x.mean(dim=(2, 3))


def _shuffle(x, groups):
  n, c, h, w = x.shape
  return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _feats(f, pre, preact):
  """RepDistiller's list; ``pre`` holds the preact replacements of f1..fN."""
  if not preact:
    return f
  return [f[0]] + list(pre) + [f[-1]]


# ------------------------------------------------------------------ CIFAR ResNet (resnet.py)
class CifarBasic(nn.Module):
  def __init__(self, cin, cout, stride, downsample):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.downsample = downsample

  def forward(self, x):
    y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
    pre = y + (x if self.downsample is None else self.downsample(x))
    return F.relu(pre), pre


def _run_layer(layer, x):
  pre = None
  for block in layer:
    x, pre = block(x)
  return x, pre


class CifarResNet(nn.Module):
  def __init__(self, depth, widths, num_classes):
    super().__init__()
    n = (depth - 2) // 6
    self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(widths[0])
    cin = widths[0]
    for i, (w, s) in enumerate(zip(widths[1:], (1, 2, 2)), start=1):
      blocks = []
      for b in range(n):
        stride = s if b == 0 else 1
        ds = None
        if b == 0 and (stride != 1 or cin != w):
          ds = nn.Sequential(nn.Conv2d(cin, w, 1, stride, bias=False), nn.BatchNorm2d(w))
        blocks.append(CifarBasic(cin, w, stride, ds))
        cin = w
      setattr(self, f"layer{i}", nn.Sequential(*blocks))
    self.fc = nn.Linear(widths[3], num_classes)

  def forward(self, x, is_feat=False, preact=False):
    h = F.relu(self.bn1(self.conv1(x)))
    f, pre = [h], []
    for layer in (self.layer1, self.layer2, self.layer3):
      h, p = _run_layer(layer, h)
      f.append(h)
      pre.append(p)
    pooled = _gap(h)
    f.append(pooled)
    logits = self.fc(pooled)
    return (_feats(f, pre, preact), logits) if is_feat else logits


# ------------------------------------------------------------------ ResNet50 (resnetv2.py)
class V2Bottleneck(nn.Module):
  def __init__(self, cin, planes, stride):
    super().__init__()
    cout = 4 * planes
    self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(cout)
    self.shortcut = nn.Sequential()
    if stride != 1 or cin != cout:
      self.shortcut = nn.Sequential(
        nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
      )

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = F.relu(self.bn2(self.conv2(y)))
    pre = self.bn3(self.conv3(y)) + self.shortcut(x)
    return F.relu(pre), pre


class CifarResNet50(nn.Module):
  def __init__(self, num_classes, blocks=(3, 4, 6, 3)):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    cin = 64
    for i, (planes, s, n) in enumerate(zip((64, 128, 256, 512), (1, 2, 2, 2), blocks), start=1):
      layer = []
      for b in range(n):
        layer.append(V2Bottleneck(cin, planes, s if b == 0 else 1))
        cin = 4 * planes
      setattr(self, f"layer{i}", nn.Sequential(*layer))
    self.linear = nn.Linear(cin, num_classes)

  def forward(self, x, is_feat=False, preact=False):
    h = F.relu(self.bn1(self.conv1(x)))
    f, pre = [h], []
    for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
      h, p = _run_layer(layer, h)
      f.append(h)
      pre.append(p)
    pooled = _gap(h)
    f.append(pooled)
    logits = self.linear(pooled)
    # RepDistiller nests the preact list ([[f0, ...], logits]); flattened here.
    return (_feats(f, pre, preact), logits) if is_feat else logits


# ------------------------------------------------------------------ WRN (wrn.py)
class WRNBlock(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(cin)
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.same = cin == cout
    self.convShortcut = None if self.same else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)

  def forward(self, x):
    a = F.relu(self.bn1(x))
    y = self.conv2(F.relu(self.bn2(self.conv1(a))))
    return (x if self.same else self.convShortcut(a)) + y


class WRNGroup(nn.Module):
  def __init__(self, n, cin, cout, stride):
    super().__init__()
    self.layer = nn.Sequential(
      *[WRNBlock(cin if b == 0 else cout, cout, stride if b == 0 else 1) for b in range(n)]
    )

  def forward(self, x):
    return self.layer(x)


class WideResNet(nn.Module):
  def __init__(self, depth, widen, num_classes):
    super().__init__()
    n = (depth - 4) // 6
    ch = (16, 16 * widen, 32 * widen, 64 * widen)
    self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
    self.block1 = WRNGroup(n, ch[0], ch[1], 1)
    self.block2 = WRNGroup(n, ch[1], ch[2], 2)
    self.block3 = WRNGroup(n, ch[2], ch[3], 2)
    self.bn1 = nn.BatchNorm2d(ch[3])
    self.fc = nn.Linear(ch[3], num_classes)

  def forward(self, x, is_feat=False, preact=False):
    f0 = self.conv1(x)
    f1 = self.block1(f0)
    f2 = self.block2(f1)
    f3 = self.block3(f2)
    pooled = _gap(F.relu(self.bn1(f3)))
    logits = self.fc(pooled)
    if not is_feat:
      return logits
    f = [f0, f1, f2, f3, pooled]
    # RepDistiller applies the *next* BN again (no ReLU) to get the preact features.
    pre = [self.block2.layer[0].bn1(f1), self.block3.layer[0].bn1(f2), self.bn1(f3)]
    return _feats(f, pre, preact), logits


# ------------------------------------------------------------------ VGG-BN (vgg.py)
VGG_CFG = {
  "S": [[64], [128], [256], [512], [512]],
  "A": [[64], [128], [256, 256], [512, 512], [512, 512]],
  "B": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
  "D": [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
  "E": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


def _vgg_block(widths, cin):
  mods = []
  for w in widths:
    mods += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
    cin = w
  return nn.Sequential(*mods[:-1])  # the block ends with its BN


class VGG(nn.Module):
  def __init__(self, cfg, num_classes):
    super().__init__()
    cfg = VGG_CFG[cfg]
    cin = 3
    for b in range(5):
      setattr(self, f"block{b}", _vgg_block(cfg[b], cin))
      cin = cfg[b][-1]
    self.classifier = nn.Linear(512, num_classes)

  def forward(self, x, is_feat=False, preact=False):
    side = x.shape[2]
    h = F.relu(self.block0(x))
    f, pre = [h], []
    for b in range(1, 5):
      if b < 4 or side == 64:  # RepDistiller: pool3 only for 64-pixel inputs
        h = F.max_pool2d(h, 2, 2)
      p = getattr(self, f"block{b}")(h)
      h = F.relu(p)
      f.append(h)
      pre.append(p)
    pooled = _gap(h)
    f.append(pooled)
    logits = self.classifier(pooled)
    return (_feats(f, pre, preact), logits) if is_feat else logits


# ------------------------------------------------------------------ MobileNetV2 (mobile_half)
class InvertedResidual(nn.Module):
  def __init__(self, cin, cout, stride, t):
    super().__init__()
    hid = cin * t
    self.identity = stride == 1 and cin == cout
    self.conv = nn.Sequential(
      nn.Conv2d(cin, hid, 1, 1, 0, bias=False),
      nn.BatchNorm2d(hid),
      nn.ReLU(),
      nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False),
      nn.BatchNorm2d(hid),
      nn.ReLU(),
      nn.Conv2d(hid, cout, 1, 1, 0, bias=False),
      nn.BatchNorm2d(cout),
    )

  def forward(self, x):
    return x + self.conv(x) if self.identity else self.conv(x)


class MobileNetV2(nn.Module):
  def __init__(self, num_classes, t=6, width=0.5):
    super().__init__()
    setting = [
      (1, 16, 1, 1),
      (t, 24, 2, 1),
      (t, 32, 3, 2),
      (t, 64, 4, 2),
      (t, 96, 3, 1),
      (t, 160, 3, 2),
      (t, 320, 1, 1),
    ]
    cin = int(32 * width)
    self.conv1 = nn.Sequential(
      nn.Conv2d(3, cin, 3, 2, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU()
    )
    self.blocks = nn.ModuleList()
    for ti, c, n, s in setting:
      cout = int(c * width)
      group = []
      for b in range(n):
        group.append(InvertedResidual(cin, cout, s if b == 0 else 1, ti))
        cin = cout
      self.blocks.append(nn.Sequential(*group))
    last = int(1280 * width) if width > 1.0 else 1280
    self.conv2 = nn.Sequential(
      nn.Conv2d(cin, last, 1, 1, 0, bias=False), nn.BatchNorm2d(last), nn.ReLU()
    )
    self.classifier = nn.Sequential(nn.Linear(last, num_classes))

  def forward(self, x, is_feat=False, preact=False):
    h = self.conv1(x)
    f = [h]
    for groups in ((0, 1), (2,), (3, 4), (5, 6)):
      for g in groups:
        h = self.blocks[g](h)
      f.append(h)
    pooled = _gap(self.conv2(h))
    f.append(pooled)
    logits = self.classifier(pooled)
    return (f, logits) if is_feat else logits  # preact is ignored, as in RepDistiller


# ------------------------------------------------------------------ ShuffleNetV1 (ShuffleNetv1.py)
class ShuffleV1Block(nn.Module):
  def __init__(self, cin, cout, stride, groups):
    super().__init__()
    mid = cout // 4
    self.g1 = 1 if cin == 24 else groups
    self.stride = stride
    self.conv1 = nn.Conv2d(cin, mid, 1, groups=self.g1, bias=False)
    self.bn1 = nn.BatchNorm2d(mid)
    self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
    self.bn2 = nn.BatchNorm2d(mid)
    self.conv3 = nn.Conv2d(mid, cout, 1, groups=groups, bias=False)
    self.bn3 = nn.BatchNorm2d(cout)

  def forward(self, x):
    y = _shuffle(F.relu(self.bn1(self.conv1(x))), self.g1)
    y = F.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    if self.stride == 2:
      pre = torch.cat([y, F.avg_pool2d(x, 3, 2, 1)], 1)
    else:
      pre = y + x
    return F.relu(pre), pre


class ShuffleNetV1(nn.Module):
  def __init__(self, num_classes, planes=(240, 480, 960), blocks=(4, 8, 4), groups=3):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(24)
    cin = 24
    for i, (p, n) in enumerate(zip(planes, blocks), start=1):
      layer = []
      for b in range(n):
        layer.append(ShuffleV1Block(cin, p - (cin if b == 0 else 0), 2 if b == 0 else 1, groups))
        cin = p
      setattr(self, f"layer{i}", nn.Sequential(*layer))
    self.linear = nn.Linear(planes[2], num_classes)

  def forward(self, x, is_feat=False, preact=False):
    h = F.relu(self.bn1(self.conv1(x)))
    f, pre = [h], []
    for layer in (self.layer1, self.layer2, self.layer3):
      h, p = _run_layer(layer, h)
      f.append(h)
      pre.append(p)
    pooled = _gap(h)
    f.append(pooled)
    logits = self.linear(pooled)
    return (_feats(f, pre, preact), logits) if is_feat else logits


# ------------------------------------------------------------------ ShuffleNetV2 (ShuffleNetv2.py)
class ShuffleV2Basic(nn.Module):
  def __init__(self, cin):
    super().__init__()
    c = cin // 2
    self.c = c
    self.conv1 = nn.Conv2d(c, c, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(c)
    self.conv2 = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
    self.bn2 = nn.BatchNorm2d(c)
    self.conv3 = nn.Conv2d(c, c, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(c)

  def forward(self, x):
    x1, x2 = x[:, : self.c], x[:, self.c :]
    y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x2)))))
    y = self.bn3(self.conv3(y))
    pre = torch.cat([x1, y], 1)
    return _shuffle(torch.cat([x1, F.relu(y)], 1), 2), pre


class ShuffleV2Down(nn.Module):
  def __init__(self, cin, cout):
    super().__init__()
    mid = cout // 2
    self.conv1 = nn.Conv2d(cin, cin, 3, 2, 1, groups=cin, bias=False)
    self.bn1 = nn.BatchNorm2d(cin)
    self.conv2 = nn.Conv2d(cin, mid, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(mid)
    self.conv3 = nn.Conv2d(cin, mid, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(mid)
    self.conv4 = nn.Conv2d(mid, mid, 3, 2, 1, groups=mid, bias=False)
    self.bn4 = nn.BatchNorm2d(mid)
    self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
    self.bn5 = nn.BatchNorm2d(mid)

  def forward(self, x):
    left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
    right = F.relu(self.bn3(self.conv3(x)))
    right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
    return _shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(nn.Module):
  def __init__(self, num_classes, widths=(116, 232, 464, 1024), blocks=(3, 7, 3)):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(24)
    cin = 24
    for i, (w, n) in enumerate(zip(widths[:3], blocks), start=1):
      setattr(
        self,
        f"layer{i}",
        nn.Sequential(ShuffleV2Down(cin, w), *[ShuffleV2Basic(w) for _ in range(n)]),
      )
      cin = w
    self.conv2 = nn.Conv2d(widths[2], widths[3], 1, 1, 0, bias=False)
    self.bn2 = nn.BatchNorm2d(widths[3])
    self.linear = nn.Linear(widths[3], num_classes)

  def forward(self, x, is_feat=False, preact=False):
    h = F.relu(self.bn1(self.conv1(x)))
    f, pre = [h], []
    for layer in (self.layer1, self.layer2, self.layer3):
      h = layer[0](h)
      h, p = _run_layer(layer[1:], h)
      f.append(h)
      pre.append(p)
    pooled = _gap(F.relu(self.bn2(self.conv2(h))))
    f.append(pooled)
    logits = self.linear(pooled)
    return (_feats(f, pre, preact), logits) if is_feat else logits


# ------------------------------------------------------------------ torchvision ResNet
class TVBasicBlock(nn.Module):
  expansion = 1

  def __init__(self, cin, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.relu = nn.ReLU(inplace=True)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.downsample = downsample

  def forward(self, x):
    y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
    pre = y + (x if self.downsample is None else self.downsample(x))
    return F.relu(pre), pre


class TVBottleneck(nn.Module):
  expansion = 4

  def __init__(self, cin, planes, stride=1, downsample=None):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # v1.5: stride here
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes * 4)
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x):
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    pre = y + (x if self.downsample is None else self.downsample(x))
    return F.relu(pre), pre


class TVResNet(nn.Module):
  def __init__(self, block, layers, num_classes=1000):
    super().__init__()
    self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    self.bn1 = nn.BatchNorm2d(64)
    self.relu = nn.ReLU(inplace=True)
    self.maxpool = nn.MaxPool2d(3, 2, 1)
    cin = 64
    for i, (planes, s, n) in enumerate(zip((64, 128, 256, 512), (1, 2, 2, 2), layers), start=1):
      blocks = []
      for b in range(n):
        stride = s if b == 0 else 1
        ds = None
        if b == 0 and (stride != 1 or cin != planes * block.expansion):
          ds = nn.Sequential(
            nn.Conv2d(cin, planes * block.expansion, 1, stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion),
          )
        blocks.append(block(cin, planes, stride, ds))
        cin = planes * block.expansion
      setattr(self, f"layer{i}", nn.Sequential(*blocks))
    self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x, is_feat=False, preact=False):
    stem = self.relu(self.bn1(self.conv1(x)))
    h = self.maxpool(stem)
    f, pre = [stem], []
    for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
      h, p = _run_layer(layer, h)
      f.append(h)
      pre.append(p)
    pooled = torch.flatten(self.avgpool(h), 1)
    f.append(pooled)
    logits = self.fc(pooled)
    return (_feats(f, pre, preact), logits) if is_feat else logits


# ------------------------------------------------------------------ mdistiller MobileNetV1
def _conv_bn(cin, cout, stride):
  return nn.Sequential(
    nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
  )


def _conv_dw(cin, cout, stride):
  return nn.Sequential(
    nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
    nn.BatchNorm2d(cin),
    nn.ReLU(inplace=True),
    nn.Conv2d(cin, cout, 1, 1, 0, bias=False),
    nn.BatchNorm2d(cout),
    nn.ReLU(inplace=True),
  )


class MobileNetV1(nn.Module):
  WIDTHS = (
    ((32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2))
    + ((512, 512, 1),) * 5
    + ((512, 1024, 2), (1024, 1024, 1))
  )

  def __init__(self, num_classes=1000):
    super().__init__()
    self.model = nn.Sequential(
      _conv_bn(3, 32, 2), *[_conv_dw(*w) for w in self.WIDTHS], nn.AdaptiveAvgPool2d(1)
    )  # mdistiller: AvgPool2d(7) (224 input)
    self.fc = nn.Linear(1024, num_classes)

  def forward(self, x, is_feat=False, preact=False):
    stem = self.model[0](x)
    h = stem
    f, pre = [stem], []
    for lo, hi in ((1, 3), (4, 5), (6, 11), (12, 13)):  # mdistiller's feat1..feat4
      for i in range(lo, hi):
        h = self.model[i](h)
      p = self.model[hi][:-1](h)
      h = F.relu(p)
      f.append(h)
      pre.append(p)
    pooled = self.model[14](h).flatten(1)
    f.append(pooled)
    logits = self.fc(pooled)
    return (_feats(f, pre, preact), logits) if is_feat else logits


# ------------------------------------------------------------------ registry
def _cifar_resnet(depth, widths):
  return lambda k: CifarResNet(depth, widths, k)


_B, _X4 = (16, 16, 32, 64), (32, 64, 128, 256)
CIFAR = {
  "resnet8": _cifar_resnet(8, _B),
  "resnet14": _cifar_resnet(14, _B),
  "resnet20": _cifar_resnet(20, _B),
  "resnet32": _cifar_resnet(32, _B),
  "resnet44": _cifar_resnet(44, _B),
  "resnet56": _cifar_resnet(56, _B),
  "resnet110": _cifar_resnet(110, _B),
  "resnet8x4": _cifar_resnet(8, _X4),
  "resnet32x4": _cifar_resnet(32, _X4),
  "ResNet50": CifarResNet50,
  "wrn_16_1": lambda k: WideResNet(16, 1, k),
  "wrn_16_2": lambda k: WideResNet(16, 2, k),
  "wrn_40_1": lambda k: WideResNet(40, 1, k),
  "wrn_40_2": lambda k: WideResNet(40, 2, k),
  "vgg8": lambda k: VGG("S", k),
  "vgg11": lambda k: VGG("A", k),
  "vgg13": lambda k: VGG("B", k),
  "vgg16": lambda k: VGG("D", k),
  "vgg19": lambda k: VGG("E", k),
  "MobileNetV2": MobileNetV2,
  "ShuffleV1": ShuffleNetV1,
  "ShuffleV2": ShuffleNetV2,
}
IMAGENET = {
  "resnet18_imagenet": lambda k: TVResNet(TVBasicBlock, (2, 2, 2, 2), k),
  "resnet34_imagenet": lambda k: TVResNet(TVBasicBlock, (3, 4, 6, 3), k),
  "resnet50_imagenet": lambda k: TVResNet(TVBottleneck, (3, 4, 6, 3), k),
  "resnet101_imagenet": lambda k: TVResNet(TVBottleneck, (3, 4, 23, 3), k),
  "resnet152_imagenet": lambda k: TVResNet(TVBottleneck, (3, 8, 36, 3), k),
  "mobilenetv1_imagenet": MobileNetV1,
}
# RepDistiller ignores ``preact`` for MobileNetV2.
PREACT_UNSUPPORTED = {"MobileNetV2"}
