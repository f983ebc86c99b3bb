"""When a challenger may replace the champion: the rule, as a pure function of their evaluations."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromotionRule:
    """Promote when the challenger's FID is lower than the champion's by more than `min_fid_gain`, and
    it covers at least as many classes minus `max_classes_lost`."""

    min_fid_gain: float = 0.0
    max_classes_lost: int = 0

    def decide(self, challenger: dict[str, float], champion: dict[str, float] | None) -> tuple[bool, str]:
        if champion is None:
            return True, "no champion yet: the first evaluated model becomes champion"
        if challenger["samples"] != champion["samples"]:
            return False, (f"not comparable: evaluated on {challenger['samples']:g} samples, the champion "
                           f"on {champion['samples']:g} (evaluate both with the same N)")
        fid_gain = champion["fid"] - challenger["fid"]
        classes_lost = champion["classes_covered"] - challenger["classes_covered"]
        checks = [
            (fid_gain > self.min_fid_gain,
             (f"FID {challenger['fid']:.3f} vs champion {champion['fid']:.3f} "
              f"(gain {fid_gain:.3f}, needs > {self.min_fid_gain:g})")),
            (classes_lost <= self.max_classes_lost,
             (f"classes covered {challenger['classes_covered']:g} vs champion "
              f"{champion['classes_covered']:g} (may lose {self.max_classes_lost})")),
        ]
        failed = [why for ok, why in checks if not ok]
        return (not failed), ("; ".join(failed) if failed else "; ".join(why for _, why in checks))
