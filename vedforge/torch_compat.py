"""``vedforge.torch_compat``: the public name of :mod:`vedforge.families.torch_fixes`.

Model cards and training code import the PyTorch fixes for ConvNeXt and DETR encoders under
this name. It is the same module object, so :func:`install` and the fixed class share one state.
Like the fixes themselves, it imports torch and transformers only.
"""

import sys

from vedforge.families import torch_fixes

sys.modules[__name__] = torch_fixes
