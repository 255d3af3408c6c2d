"""Prepare a TFDS dataset (array_record format) for kdjax.

    python -m kdjax.data.prepare NAME --data_dir DIR [--manual_dir DIR]

Needs TensorFlow (pip install tensorflow-cpu) to build; reading the result
later does not. Put the archives in the manual dir first (default
DIR/downloads/manual): cifar-10-binary.tar.gz / cifar-100-binary.tar.gz,
ILSVRC2012_img_train.tar + ILSVRC2012_img_val.tar, or the (Fashion-)MNIST
.gz files. Files found there are used instead of downloading (TFDS verifies
their checksums).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from kdjax.data.registry import DIGIT_DOMAIN_NAMES, KNOWN_DATASETS, LODO_DOMAINS

# Datasets kdjax reads from their original directory layout or builds from MNIST (no TFDS
# builder to prepare).
NO_TFDS_BUILDER = ('tiny_imagenet',) + DIGIT_DOMAIN_NAMES + tuple(LODO_DOMAINS)

TF_MISSING = (
  'kdjax.data.prepare needs TensorFlow to build TFDS datasets, and it is not '
  'installed. Install it on this machine (pip install tensorflow-cpu) or '
  'prepare on a machine that has it and copy DATA_DIR/{name}/ over; '
  'reading prepared data does not need TensorFlow.'
)


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(
    prog='python -m kdjax.data.prepare',
    description='Prepare a TFDS dataset in array_record format for kdjax.',
  )
  p.add_argument('name', choices=[n for n in KNOWN_DATASETS if n not in NO_TFDS_BUILDER])
  p.add_argument(
    '--data_dir', required=True, help='TFDS data dir to write (pass the same to kdjax).'
  )
  p.add_argument(
    '--manual_dir',
    default=None,
    help='where the downloaded archives are (default: DATA_DIR/downloads/manual).',
  )
  return p.parse_args(argv)


def tensorflow_available() -> bool:
  return importlib.util.find_spec('tensorflow') is not None


def main(argv=None) -> int:
  args = parse_args(argv)
  if not tensorflow_available():
    print('error: ' + TF_MISSING.format(name=args.name), file=sys.stderr)
    return 2
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  data_dir = os.path.abspath(os.path.expanduser(args.data_dir))
  manual_dir = args.manual_dir or os.path.join(data_dir, 'downloads', 'manual')
  os.makedirs(manual_dir, exist_ok=True)
  builder = tfds.builder(args.name, data_dir=data_dir, file_format='array_record')
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
  )
  print(f'{args.name} prepared in {builder.data_dir}. Use data_dir={data_dir!r} with kdjax.')
  return 0


if __name__ == '__main__':
  sys.exit(main())
