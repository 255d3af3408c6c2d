r"""Golden values for ReviewKD (torch, float64): ``tests/golden/reviewkd.npz``.

  $KDJAX_TORCH_PYTHON tools/goldens/make_reviewkd_goldens.py

Our transcription of megvii-research/mdistiller ``mdistiller/distillers/ReviewKD.py`` (``ABF``,
the fusion loop of ``ReviewKD.forward_train`` and ``hcl_loss``), run in train mode (BatchNorm on
batch statistics) on fixed random NCHW features, for two pairs:

* ``same``: student and teacher maps of equal sizes (resnet8x4-like: shapes [1, 2, 4, 8]),
  student channels 4/8/16 + pooled 16, teacher 6/12/24 + pooled 24 (the 8×8 stage uses all
  three HCL pooling levels 4, 2, 1);
* ``resize``: student maps half the teacher's size (the ShuffleNet-V2 case: shapes [1, 1, 2, 4],
  out_shapes [1, 2, 4, 8]), so every fused ABF output is nearest-upsampled.

Stores (NHWC for maps) the student and teacher features, the ABF parameters (torch layout, named
``abf{i}/...`` with ``i`` the forward index), the ABF outputs, the HCL value, its gradients w.r.t.
the student features and every ABF parameter, and the BatchNorm running means after the step.
"""

import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
torch.set_default_dtype(torch.float64)


def hcl_loss(fstudent, fteacher):
  loss_all = 0.0
  for fs, ft in zip(fstudent, fteacher):
    n, c, h, w = fs.shape
    loss = F.mse_loss(fs, ft, reduction="mean")
    cnt, tot = 1.0, 1.0
    for l in [4, 2, 1]:
      if l >= h:
        continue
      tmpfs = F.adaptive_avg_pool2d(fs, (l, l))
      tmpft = F.adaptive_avg_pool2d(ft, (l, l))
      cnt /= 2.0
      loss += F.mse_loss(tmpfs, tmpft, reduction="mean") * cnt
      tot += cnt
    loss_all = loss_all + loss / tot
  return loss_all


class ABF(nn.Module):
  def __init__(self, in_channel, mid_channel, out_channel, fuse):
    super().__init__()
    self.conv1 = nn.Sequential(
      nn.Conv2d(in_channel, mid_channel, kernel_size=1, bias=False), nn.BatchNorm2d(mid_channel)
    )
    self.conv2 = nn.Sequential(
      nn.Conv2d(mid_channel, out_channel, kernel_size=3, stride=1, padding=1, bias=False),
      nn.BatchNorm2d(out_channel),
    )
    self.att_conv = (
      nn.Sequential(nn.Conv2d(mid_channel * 2, 2, kernel_size=1), nn.Sigmoid()) if fuse else None
    )
    nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
    nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

  def forward(self, x, y=None, shape=None, out_shape=None):
    n, _, h, w = x.shape
    x = self.conv1(x)
    if self.att_conv is not None:
      y = F.interpolate(y, (shape, shape), mode="nearest")
      z = self.att_conv(torch.cat([x, y], dim=1))
      x = x * z[:, 0].view(n, 1, h, w) + y * z[:, 1].view(n, 1, h, w)
    if x.shape[-1] != out_shape:
      x = F.interpolate(x, (out_shape, out_shape), mode="nearest")
    y = self.conv2(x)
    return y, x


def case(rng, tag, b, s_hw, s_c, t_hw, t_c, out):
  """s_hw/t_hw: spatial sizes of stages 1..N; channels s_c/t_c of stages 1..N then pooled."""
  torch.manual_seed(int(rng.integers(1 << 30)))
  in_channels, out_channels = list(s_c), list(t_c)
  shapes = [1] + list(s_hw[::-1])  # mdistiller's SHAPES (reversed order)
  out_shapes = [1] + list(t_hw[::-1])
  mid = min(512, in_channels[-1])
  abfs = nn.ModuleList(
    [ABF(c, mid, out_channels[i], i < len(in_channels) - 1) for i, c in enumerate(in_channels)]
  )
  # Move BN affine parameters off (1, 0) so that their gradients and roles are exercised.
  with torch.no_grad():
    for m in abfs.modules():
      if isinstance(m, nn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
  abfs_rev = abfs[::-1]
  feats_s = [
    torch.tensor(rng.standard_normal((b, c, h, h)), requires_grad=True)
    for c, h in zip(s_c, list(s_hw) + [1])
  ]
  feats_t = [
    torch.tensor(rng.standard_normal((b, c, h, h)) * 0.5 + 0.1)
    for c, h in zip(t_c, list(t_hw) + [1])
  ]
  # pooled features are 2-D in mdistiller and unsqueezed to (B, C, 1, 1)
  x = feats_s[::-1]
  results = []
  o, res = abfs_rev[0](x[0], out_shape=out_shapes[0])
  results.append(o)
  for f, abf, shape, out_shape in zip(x[1:], abfs_rev[1:], shapes[1:], out_shapes[1:]):
    o, res = abf(f, res, shape, out_shape)
    results.insert(0, o)
  loss = hcl_loss(results, feats_t)
  loss.backward()
  nhwc = lambda a: a.detach().numpy().transpose(0, 2, 3, 1)
  for i, (fs, ft, r) in enumerate(zip(feats_s, feats_t, results)):
    out[f"{tag}/student{i}"] = nhwc(fs)
    out[f"{tag}/teacher{i}"] = nhwc(ft)
    out[f"{tag}/abf_out{i}"] = nhwc(r)
    out[f"{tag}/grad_student{i}"] = nhwc(fs.grad)
  for i, abf in enumerate(abfs):
    for name, p in abf.named_parameters():
      out[f"{tag}/abf{i}/{name}"] = p.detach().numpy()
      out[f"{tag}/abf{i}/{name}/grad"] = p.grad.numpy()
    for name, buf in abf.named_buffers():
      if name.endswith("running_mean"):
        out[f"{tag}/abf{i}/{name}"] = buf.numpy()
  out[f"{tag}/hcl"] = np.array(loss.item())
  out[f"{tag}/num_levels"] = np.array(len(in_channels))


def main():
  rng = np.random.Generator(np.random.PCG64(21))
  out = {}
  case(rng, "same", 4, (8, 4, 2), (4, 8, 16, 16), (8, 4, 2), (6, 12, 24, 24), out)
  case(rng, "resize", 4, (4, 2, 1), (5, 10, 20, 20), (8, 4, 2), (4, 8, 16, 16), out)
  path = os.path.join(ROOT, "tests", "golden", "reviewkd.npz")
  np.savez_compressed(path, **out)
  print("wrote", path, {k: float(v) for k, v in out.items() if v.ndim == 0})


if __name__ == "__main__":
  main()
