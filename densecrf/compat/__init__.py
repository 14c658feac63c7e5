"""Compatibility layers for code written against other dense-CRF libraries.

``densecrf.compat.pydensecrf`` replaces ``pydensecrf``: change
``import pydensecrf.densecrf as dcrf`` to
``import densecrf.compat.pydensecrf.densecrf as dcrf`` and
``from pydensecrf.utils import ...`` to
``from densecrf.compat.pydensecrf.utils import ...``.
"""
