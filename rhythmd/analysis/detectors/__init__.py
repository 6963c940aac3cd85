"""Online detectors, one per module, behind one contract (:class:`base.Signal`).

- :mod:`.divergence`: early divergence of the train loss, and spikes that recover;
- :mod:`.stagnation`: late stagnation and slow progress of the monitored metric;
- :mod:`.oscillation`: validation oscillation;
- :mod:`.series`: the monitored series in step blocks, its orientation and relative view.
"""

from .base import Signal, Stateful
from .divergence import DivergenceDetector
from .oscillation import OscillationDetector
from .series import EvalSeries, Orientation
from .stagnation import StagnationDetector

__all__ = ["DivergenceDetector", "EvalSeries", "Orientation", "OscillationDetector", "Signal",
           "StagnationDetector", "Stateful"]
