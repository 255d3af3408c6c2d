"""CIFAR model families (RepDistiller definitions). Importing registers them.

Every model follows the protocol in ``kdjax.models.registry``; each family's module docstring
says what its taps are.
"""

from kdjax.models.cifar import mobilenetv2  # noqa: F401
from kdjax.models.cifar import resnet  # noqa: F401
from kdjax.models.cifar import resnetv2  # noqa: F401
from kdjax.models.cifar import shufflenetv1  # noqa: F401
from kdjax.models.cifar import shufflenetv2  # noqa: F401
from kdjax.models.cifar import vgg  # noqa: F401
from kdjax.models.cifar import wrn  # noqa: F401
