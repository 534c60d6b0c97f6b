"""The model bundle: churn, engagement, value, upsell and advocacy models and tier thresholds,
versioned together.

One learner publishes bundles; every scorer loads the latest. A bundle is plain JSON bytes
(no pickle), so publishing it on a compacted topic is safe and inspectable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from models.config import ScoringConfig
from models.learning.churn import ChurnModel
from models.learning.engagement import EngagementModel
from models.learning.propensity import AdvocacyModel, UpsellModel
from models.learning.value import ValueModel
from models.scoring.tiers import TierThresholds

__all__ = ["ModelBundle"]


@dataclass(slots=True)
class ModelBundle:
    """Everything a scorer needs to score, with one version string per part.

    >>> b = ModelBundle.initial()
    >>> sorted(b.versions().values())  # doctest: +NORMALIZE_WHITESPACE
    ['advocacy-00000', 'churn-00000', 'engagement-00000', 'tiers-00000', 'upsell-00000',
     'value-00000']
    >>> ModelBundle.restore(b.snapshot()).versions() == b.versions()
    True
    """

    churn: ChurnModel
    engagement: EngagementModel
    value: ValueModel
    tiers: TierThresholds = field(default_factory=TierThresholds)
    sequence: int = 0
    upsell: UpsellModel = field(default_factory=UpsellModel)
    advocacy: AdvocacyModel = field(default_factory=AdvocacyModel)

    @classmethod
    def initial(cls, config: ScoringConfig | None = None) -> ModelBundle:
        """Untrained models with documented priors and defaults."""
        return cls(ChurnModel(config), EngagementModel(config), ValueModel(config),
                   upsell=UpsellModel(config), advocacy=AdvocacyModel(config))

    def versions(self) -> dict[str, str]:
        """Model name -> version string (goes on every scorecard)."""
        return {
            "churn": self.churn.version,
            "engagement": self.engagement.version,
            "value": self.value.version,
            "tiers": self.tiers.version,
            "upsell": self.upsell.version,
            "advocacy": self.advocacy.version,
        }

    def snapshot(self) -> bytes:
        """Serialise the whole bundle to JSON bytes."""
        return orjson.dumps(
            {
                "sequence": self.sequence,
                "churn": self.churn.to_dict(),
                "engagement": self.engagement.to_dict(),
                "value": self.value.to_dict(),
                "tiers": self.tiers.to_dict(),
                "upsell": self.upsell.to_dict(),
                "advocacy": self.advocacy.to_dict(),
            }
        )

    @classmethod
    def restore(cls, b: bytes, config: ScoringConfig | None = None) -> ModelBundle:
        """Rebuild an independent bundle from `snapshot()` bytes (bundles published before the
        upsell and advocacy models restore them untrained)."""
        d = orjson.loads(b)
        return cls(
            churn=ChurnModel.from_dict(d["churn"], config),
            engagement=EngagementModel.from_dict(d["engagement"], config),
            value=ValueModel.from_dict(d["value"], config),
            tiers=TierThresholds.from_dict(d["tiers"]),
            sequence=d["sequence"],
            upsell=UpsellModel.from_dict(d.get("upsell"), config),
            advocacy=AdvocacyModel.from_dict(d.get("advocacy"), config),
        )
