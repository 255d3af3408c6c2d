"""PyTorch eager reference for bench/kd_step.py: the same KD train step (resnet32x4 -> resnet8x4,
0.1 CE + 0.9 T^2 KL at T=4, SGD 0.05 momentum 0.9 wd 5e-4), CIFAR ResNets written here after
RepDistiller's definitions (BasicBlock, filters [32, 64, 128, 256], 6n+2 layers).

Run with any Python that has torch:  python bench/torch_kd_step.py --batch 64 --steps 10
Prints one JSON line {"img_per_s": ..., ...}.
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.b1 = nn.BatchNorm2d(cout)
    self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.b2 = nn.BatchNorm2d(cout)
    self.down = None
    if stride != 1 or cin != cout:
      self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

  def forward(self, x):
    out = F.relu(self.b1(self.c1(x)))
    out = self.b2(self.c2(out))
    return F.relu(out + (x if self.down is None else self.down(x)))


class CifarResNet(nn.Module):
  def __init__(self, depth, filters=(32, 64, 128, 256), num_classes=100):
    super().__init__()
    n = (depth - 2) // 6
    self.conv1 = nn.Conv2d(3, filters[0], 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(filters[0])
    layers, cin = [], filters[0]
    for i, c in enumerate(filters[1:]):
      for j in range(n):
        layers.append(Block(cin, c, 2 if (i > 0 and j == 0) else 1))
        cin = c
    self.layers = nn.Sequential(*layers)
    self.fc = nn.Linear(cin, num_classes)

  def forward(self, x):
    x = F.relu(self.bn1(self.conv1(x)))
    x = self.layers(x)
    return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--channels_last", action="store_true")
  args = ap.parse_args()
  torch.manual_seed(0)
  teacher, student = CifarResNet(32).eval(), CifarResNet(8).train()
  fmt = torch.channels_last if args.channels_last else torch.contiguous_format
  teacher, student = teacher.to(memory_format=fmt), student.to(memory_format=fmt)
  opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
  x = torch.randn(args.batch, 3, 32, 32).to(memory_format=fmt)
  y = torch.randint(0, 100, (args.batch,))

  def step():
    with torch.no_grad():
      t = teacher(x)
    s = student(x)
    kl = F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean") * 16
    loss = 0.1 * F.cross_entropy(s, y) + 0.9 * kl
    opt.zero_grad()
    loss.backward()
    opt.step()

  for _ in range(3):
    step()
  times = []
  for _ in range(args.repeats):
    t0 = time.perf_counter()
    for _ in range(args.steps):
      step()
    times.append((time.perf_counter() - t0) / args.steps)
  med = statistics.median(times)
  print(
    json.dumps(
      {
        "framework": f"torch {torch.__version__} eager f32",
        "batch": args.batch,
        "step_s": med,
        "img_per_s": args.batch / med,
        "threads": torch.get_num_threads(),
        "channels_last": args.channels_last,
      }
    )
  )


if __name__ == "__main__":
  main()
