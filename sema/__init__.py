"""sema: fast, exact, checkpointable weight averaging (EMA, Switch EMA, SWA, ...) for any PyTorch training loop.

    import sema
    avg = sema.SEMA(model, decay=0.999)      # or sema.EMA(model), sema.SWA(model), sema.METHODS[name](model)
    for epoch in range(epochs):
        for batch in loader:
            ...; optimizer.step(); avg.update()
        avg.epoch_end()                       # SEMA: copies the average into the model (the switch)
        with avg.swapped():
            evaluate(model)                   # the model holds the average inside

Every method satisfies `sema.protocol.WeightAverager`. Runtime dependency: torch only.
"""

from sema import bn  # noqa: F401  (documented as sema.bn.update_bn: importable as an attribute)
from sema.bema import BEMA
from sema.ema import EMA
from sema.lawa import LAWA
from sema.lookahead import Lookahead
from sema.power_ema import PowerEMA
from sema.protocol import WeightAverager
from sema.swa import SWA
from sema.switch import SEMA

__version__ = "0.1.0"

# The explicit registry the benchmark engine uses: `METHODS[name](model, **kwargs)`. One line per method.
METHODS: dict[str, type] = {
    "ema": EMA,
    "sema": SEMA,
    "swa": SWA,
    "lawa": LAWA,
    "bema": BEMA,
    "power_ema": PowerEMA,
    "lookahead": Lookahead,
}

__all__ = ["EMA", "SEMA", "SWA", "LAWA", "BEMA", "PowerEMA", "Lookahead", "METHODS", "WeightAverager", "__version__"]
