"""Dataset registry: static facts about the datasets kdjax knows, and the
"how do I get this dataset" messages used when data is missing."""

from __future__ import annotations

import dataclasses

from kdjax.errors import UserError


class DatasetNotFoundError(UserError, FileNotFoundError):
  """No usable copy of a dataset was found. The message says how to get one."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """Static description of a dataset.

  `image_shape` is the (H, W, C) of the stored images for in-memory datasets.
  ImageNet images are stored at varying sizes; for it `image_shape` is the
  shape `kdjax.data.stream.HostStream` yields (224, 224, 3).
  `mean`/`std` are per channel, in [0, 1] pixel units.
  """

  name: str
  num_classes: int
  image_shape: tuple
  mean: tuple
  std: tuple
  train_split: str
  eval_split: str
  num_train: int | None
  num_eval: int | None
  in_memory: bool


_INFOS = {
  'cifar10': DatasetInfo(
    name='cifar10',
    num_classes=10,
    image_shape=(32, 32, 3),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    train_split='train',
    eval_split='test',
    num_train=50_000,
    num_eval=10_000,
    in_memory=True,
  ),
  'cifar100': DatasetInfo(
    name='cifar100',
    num_classes=100,
    image_shape=(32, 32, 3),
    mean=(0.5071, 0.4867, 0.4408),
    std=(0.2675, 0.2565, 0.2761),
    train_split='train',
    eval_split='test',
    num_train=50_000,
    num_eval=10_000,
    in_memory=True,
  ),
  'mnist': DatasetInfo(
    name='mnist',
    num_classes=10,
    image_shape=(28, 28, 1),
    mean=(0.1307,),
    std=(0.3081,),
    train_split='train',
    eval_split='test',
    num_train=60_000,
    num_eval=10_000,
    in_memory=True,
  ),
  'fashion_mnist': DatasetInfo(
    name='fashion_mnist',
    num_classes=10,
    image_shape=(28, 28, 1),
    mean=(0.2860,),
    std=(0.3530,),
    train_split='train',
    eval_split='test',
    num_train=60_000,
    num_eval=10_000,
    in_memory=True,
  ),
  'imagenet2012': DatasetInfo(
    name='imagenet2012',
    num_classes=1000,
    image_shape=(224, 224, 3),
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    train_split='train',
    eval_split='validation',
    num_train=1_281_167,
    num_eval=50_000,
    in_memory=False,
  ),
  # Directory of the original zip (kdjax.data.tiny_imagenet); mean/std as mdistiller's loader.
  'tiny_imagenet': DatasetInfo(
    name='tiny_imagenet',
    num_classes=200,
    image_shape=(64, 64, 3),
    mean=(0.4802, 0.4481, 0.3975),
    std=(0.2302, 0.2265, 0.2262),
    train_split='train',
    eval_split='validation',
    num_train=100_000,
    num_eval=10_000,
    in_memory=True,
  ),
}

# Ojha et al.'s (NeurIPS 2023) digit domains, built from MNIST by kdjax.data.domains (RGB,
# 28x28, MNIST's splits; mnist_domains = their union, 3 rows per digit). Normalisation: one for
# all four, MNIST's standard statistics (0.1307, 0.3081; the PyTorch MNIST example, on which the
# paper's MNIST CNN is based) on every channel. Design decision: a teacher trained on
# mnist_domains and a student on mnist_rgb are fed the same normalised batch during
# distillation, and the teacher is evaluated per domain, so per-dataset statistics would hand
# the teacher inputs normalised differently from its training; fixed constants also keep
# info(name) free of the data (no MNIST needed to ask) and equal to load_arrays(...).info.
DIGIT_DOMAIN_NAMES = ('mnist_rgb', 'mnist_color', 'mnist_m', 'mnist_domains')
for _name in DIGIT_DOMAIN_NAMES:
  _k = 3 if _name == 'mnist_domains' else 1
  _INFOS[_name] = DatasetInfo(
    name=_name,
    num_classes=10,
    image_shape=(28, 28, 3),
    mean=(0.1307,) * 3,
    std=(0.3081,) * 3,
    train_split='train',
    eval_split='test',
    num_train=60_000 * _k,
    num_eval=10_000 * _k,
    in_memory=True,
  )

# Leave-one-domain-out sets (kdjax.data.domains.load_lodo): a directory <root>/<domain>/<class>/,
# split = a '+'-joined list of domains with TFDS slices ('art_painting+cartoon+sketch', 'photo',
# 'photo[:80%]'); images resized to 224x224 (ResNet input), ImageNet statistics (DomainBed's
# practice; the paper gives no preprocessing: design decision). Default splits: the paper's
# students (PACS without photo, VLCS without Caltech101) and the unseen domain as test.
LODO_DOMAINS = {
  'pacs': ('art_painting', 'cartoon', 'photo', 'sketch'),
  'vlcs': ('Caltech101', 'LabelMe', 'SUN09', 'VOC2007'),
}
LODO_HELD_OUT = {'pacs': 'photo', 'vlcs': 'Caltech101'}
LODO_ENV_VARS = {'pacs': 'KDJAX_PACS_DIR', 'vlcs': 'KDJAX_VLCS_DIR'}
for _name, _classes in (('pacs', 7), ('vlcs', 5)):
  _INFOS[_name] = DatasetInfo(
    name=_name,
    num_classes=_classes,
    image_shape=(224, 224, 3),
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    train_split='+'.join(d for d in LODO_DOMAINS[_name] if d != LODO_HELD_OUT[_name]),
    eval_split=LODO_HELD_OUT[_name],
    num_train=None,
    num_eval=None,
    in_memory=True,
  )

KNOWN_DATASETS = tuple(_INFOS)


def info(name: str) -> DatasetInfo:
  """Returns the `DatasetInfo` of a registered dataset (ValueError if unknown)."""
  try:
    return _INFOS[name]
  except (KeyError, TypeError):
    raise ValueError(
      f'Unknown dataset {name!r}. Known datasets: {", ".join(KNOWN_DATASETS)}.'
    ) from None


# Environment variables naming a directory with the original IDX files.
IDX_ENV_VARS = {
  'mnist': 'KDJAX_MNIST_DIR',
  'fashion_mnist': 'KDJAX_FASHION_MNIST_DIR',
}
# Where Debian packages put the IDX files (`apt-get install dataset-fashion-mnist`).
IDX_DEFAULT_DIRS = {
  'mnist': ('/usr/share/datasets/mnist',),
  'fashion_mnist': ('/usr/share/datasets/fashion-mnist',),
}

_ARCHIVES = {
  'cifar10': 'cifar-10-binary.tar.gz',
  'cifar100': 'cifar-100-binary.tar.gz',
}


def missing_dataset_message(
  name: str, split: str, data_dir: str | None, details: list[str] = ()
) -> str:
  """One human-readable message on how to make `name` available."""
  shown_dir = data_dir if data_dir is not None else '~/tensorflow_datasets'
  d = data_dir if data_dir is not None else 'DIR'
  lines = [
    f'Dataset {name!r} (split {split!r}) was not found: no prepared TFDS copy '
    f'(array_record format) under data_dir={shown_dir!r}'
    + ('' if data_dir is not None else ' (or $TFDS_DATA_DIR)')
    + '.'
  ]
  lines += [f'  - {x}' for x in details]
  prepare = f'python -m kdjax.data.prepare {name} --data_dir {d}'
  if name in _ARCHIVES:
    lines.append(
      f'To prepare it: download {_ARCHIVES[name]} '
      f'(https://www.cs.toronto.edu/~kriz/{_ARCHIVES[name]}) and place it in '
      f'{d}/downloads/manual/, then run, on a machine with tensorflow '
      f'installed (pip install tensorflow-cpu):\n    {prepare}\n'
      f'and pass data_dir={d!r} to kdjax.'
    )
  elif name == 'imagenet2012':
    lines.append(
      'To prepare it: place ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar '
      f'in {d}/downloads/manual/, then run, on a machine with tensorflow '
      f'installed (pip install tensorflow-cpu):\n    {prepare}\n'
      f'and pass data_dir={d!r} to kdjax.'
    )
  elif name in IDX_ENV_VARS:
    env = IDX_ENV_VARS[name]
    lines.append(
      f'Easiest: give kdjax the original IDX files '
      f'(train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, '
      f't10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; gzipped or not) '
      f'with idx_dir=DIR or the environment variable {env}=DIR'
      + (
        ', or install them with:\n    apt-get install dataset-fashion-mnist\n'
        '(files go to /usr/share/datasets/fashion-mnist)'
        if name == 'fashion_mnist'
        else ''
      )
      + '.'
    )
    lines.append(
      f'Or place the four original .gz downloads (TFDS checks their checksums; '
      f'the Debian copies differ) in {d}/downloads/manual/ and run, on a '
      f'machine with tensorflow installed (pip install tensorflow-cpu):\n'
      f'    {prepare}'
    )
  return '\n'.join(lines)
