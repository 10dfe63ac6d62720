"""Champion / challenger: both models score the same recent window (rows neither was trained on); the challenger
replaces the champion only when it is better calibrated (lower Brier score by a margin) and ranks no worse."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.features.dataset import Dataset
from core.models.reversion import ReversionModel, evaluate, is_record

MIN_ROWS = 200
MIN_BRIER_GAIN = 0.001
MAX_AUC_LOSS = 0.005


@dataclass(frozen=True, slots=True)
class PromotionDecision:
    promote: bool
    reason: str
    champion: dict[str, float]
    challenger: dict[str, float]
    rows: int


def recent_window(data: Dataset, champion: ReversionModel | None, challenger: ReversionModel) -> Dataset:
    """Rows decided after both models' training labels were known: unseen by either."""
    seen_until = max(challenger.trained_until_ns, champion.trained_until_ns if champion is not None else 0)
    return data.subset(data.decision_ns > seen_until)


def decide_promotion(champion: ReversionModel | None, challenger: ReversionModel, window: Dataset) -> PromotionDecision:
    """Whether `challenger` should replace `champion`, judged on `window` (the same rows for both)."""
    new = evaluate(challenger, window)
    if champion is None:
        return PromotionDecision(True, "no champion yet", {}, new, len(window))
    if champion.scope != challenger.scope:
        return PromotionDecision(True, "the champion's scope is outdated", {}, new, len(window))
    # models of different feature sets read the same full rows: they compete on the same window (an A/B test)
    old = evaluate(champion, window)
    if (is_record(champion) and challenger.trained_until_ns > champion.trained_until_ns
            and challenger.metrics.get("rows", 0.0) > champion.metrics.get("rows", 0.0)):
        return PromotionDecision(True, "the champion is a record (a tally, no trees): a later version trained on "
                                 "more rows replaces it", old, new, len(window))
    if len(window) < MIN_ROWS:
        return PromotionDecision(False, f"only {len(window)} recent rows (need {MIN_ROWS}): keep the champion",
                                 old, new, len(window))
    gain = old["brier"] - new["brier"]
    auc_loss = old["auc"] - new["auc"] if np.isfinite(old["auc"]) and np.isfinite(new["auc"]) else 0.0
    if gain >= MIN_BRIER_GAIN and auc_loss <= MAX_AUC_LOSS:
        return PromotionDecision(True, f"Brier {new['brier']:.4f} vs {old['brier']:.4f}, AUC {new['auc']:.3f} vs "
                                 f"{old['auc']:.3f}", old, new, len(window))
    return PromotionDecision(False, f"not better: Brier {new['brier']:.4f} vs {old['brier']:.4f}, AUC "
                             f"{new['auc']:.3f} vs {old['auc']:.3f}", old, new, len(window))
