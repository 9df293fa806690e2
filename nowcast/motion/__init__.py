"""Motion: optical flow (``flow``, Lucas-Kanade ported from pySTEPS in ``lucaskanade``), semi-Lagrangian
advection in torch (``advection``) and the Lagrangian frame training and inference share (``lagrangian``).

Importing this package loads neither torch nor pySTEPS.
"""

from nowcast.motion.advection import displacements, warp
from nowcast.motion.flow import MOTION_FRAMES, motion_field
from nowcast.motion.lagrangian import from_lagrangian, to_lagrangian

__all__ = ["MOTION_FRAMES", "displacements", "from_lagrangian", "motion_field", "to_lagrangian", "warp"]
