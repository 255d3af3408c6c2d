"""ImageNet model families. Importing registers them.

* ``resnet18_imagenet``, ``resnet34_imagenet``, ``resnet50_imagenet``, ``resnet101_imagenet``,
  ``resnet152_imagenet``: torchvision layout.
* ``mobilenetv1_imagenet``: mdistiller's ImageNet MobileNetV1 student.

Registered under ``*_imagenet`` names because ``ResNet50`` is the CIFAR ResNet50 of RepDistiller.
"""

from kdjax.models.imagenet import mobilenetv1  # noqa: F401
from kdjax.models.imagenet import resnet  # noqa: F401
