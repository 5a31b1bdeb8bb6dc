//! Accuracy metrics over scored rows: ROC and precision-recall curves and their areas, recall at a
//! bounded false-positive rate, confusion matrices at a threshold, and calibration.
//!
//! A row is `(attack, score)`: whether the row is an attack, and the score a detector gave it
//! (higher means more likely an attack). At a threshold `t` a row is *flagged* when
//! `score >= t`. Every function here is pure and total: empty input, input of one class only and
//! ties give defined answers (`None` where a rate has no denominator); a score that is not a
//! finite number is refused when the rows are read ([`Scores::new`]).
//!
//! ```
//! use host_runtime::metrics::Scores;
//!
//! let scores = Scores::new([(true, 0.9), (false, 0.4), (true, 0.4), (false, 0.1)])?;
//! // Three of the four attack-benign pairs are ordered right and one is tied (counted as half).
//! assert_eq!(scores.roc_auc(), Some(0.875));
//! let at = scores.at_max_fpr(0.5).unwrap();
//! assert_eq!(at.threshold, Some(0.4));
//! assert_eq!(at.confusion.recall(), Some(1.0));
//! # Ok::<(), host_runtime::metrics::MetricsError>(())
//! ```

use serde::Serialize;

/// Why rows cannot be measured.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// A score is NaN or infinite. `index` counts rows from 0 in input order.
    #[error("row {index}: score `{score}` is not a finite number")]
    NotFinite {
        /// The row, from 0.
        index: usize,
        /// The score as given.
        score: f64,
    },
    /// Calibration needs probabilities, and a score lies outside [0, 1].
    #[error("score `{score}` lies outside [0, 1], so it is not a probability")]
    NotAProbability {
        /// The score as given.
        score: f64,
    },
}

/// A confusion matrix: attacks flagged (`tp`) and missed (`fn_`), benign rows flagged (`fp`) and
/// passed (`tn`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Confusion {
    /// Attacks flagged.
    pub tp: u64,
    /// Benign rows flagged.
    pub fp: u64,
    /// Benign rows passed.
    pub tn: u64,
    /// Attacks missed.
    #[serde(rename = "fn")]
    pub fn_: u64,
}

impl Confusion {
    /// Counts `(attack, flagged)` pairs.
    ///
    /// ```
    /// use host_runtime::metrics::Confusion;
    ///
    /// let c = Confusion::from_flags([(true, true), (true, false), (false, false)]);
    /// assert_eq!((c.tp, c.fn_, c.fp, c.tn), (1, 1, 0, 1));
    /// assert_eq!(c.recall(), Some(0.5));
    /// assert_eq!(c.precision(), Some(1.0));
    /// ```
    pub fn from_flags(rows: impl IntoIterator<Item = (bool, bool)>) -> Self {
        let mut c = Confusion::default();
        for (attack, flagged) in rows {
            c.add(attack, flagged);
        }
        c
    }

    /// Adds one row.
    pub fn add(&mut self, attack: bool, flagged: bool) {
        match (attack, flagged) {
            (true, true) => self.tp += 1,
            (true, false) => self.fn_ += 1,
            (false, true) => self.fp += 1,
            (false, false) => self.tn += 1,
        }
    }

    /// All rows.
    pub fn n(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }

    /// Attack rows.
    pub fn attacks(&self) -> u64 {
        self.tp + self.fn_
    }

    /// Benign rows.
    pub fn benign(&self) -> u64 {
        self.fp + self.tn
    }

    fn ratio(num: u64, den: u64) -> Option<f64> {
        (den > 0).then(|| num as f64 / den as f64)
    }

    /// Flagged rows that are attacks; `None` when nothing is flagged.
    pub fn precision(&self) -> Option<f64> {
        Self::ratio(self.tp, self.tp + self.fp)
    }

    /// Attacks flagged; `None` without attacks.
    pub fn recall(&self) -> Option<f64> {
        Self::ratio(self.tp, self.attacks())
    }

    /// Benign rows flagged; `None` without benign rows.
    pub fn fpr(&self) -> Option<f64> {
        Self::ratio(self.fp, self.benign())
    }

    /// The harmonic mean of precision and recall: `None` when either is undefined, 0 when both
    /// are 0.
    pub fn f1(&self) -> Option<f64> {
        match (self.precision(), self.recall()) {
            (Some(p), Some(r)) if p + r > 0.0 => Some(2.0 * p * r / (p + r)),
            (Some(_), Some(_)) => Some(0.0),
            _ => None,
        }
    }
}

/// One point of a ROC curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RocPoint {
    /// Rows with `score >= threshold` are flagged; `None` for the start of the curve, where
    /// nothing is flagged.
    pub threshold: Option<f64>,
    /// False-positive rate: benign rows flagged.
    pub fpr: f64,
    /// True-positive rate (recall): attacks flagged.
    pub tpr: f64,
}

/// One point of a precision-recall curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PrPoint {
    /// Rows with `score >= threshold` are flagged; `None` for the start of the curve (recall 0,
    /// precision 1 by convention).
    pub threshold: Option<f64>,
    /// Attacks flagged.
    pub recall: f64,
    /// Flagged rows that are attacks.
    pub precision: f64,
}

/// The operating point that keeps the false-positive rate within a bound.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FprPoint {
    /// The bound asked for.
    pub max_fpr: f64,
    /// The smallest observed score whose threshold keeps the false-positive rate within the
    /// bound; `None` when no observed score does (then nothing is flagged).
    pub threshold: Option<f64>,
    /// The rows at that threshold.
    pub confusion: Confusion,
}

impl FprPoint {
    /// Whether a score is flagged at this point.
    pub fn flags(&self, score: f64) -> bool {
        self.threshold.is_some_and(|t| score >= t)
    }
}

/// One bin of a reliability table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReliabilityBin {
    /// The bin's lower edge (included).
    pub lower: f64,
    /// The bin's upper edge (excluded, except 1 in the last bin).
    pub upper: f64,
    /// Rows whose score falls in the bin.
    pub count: u64,
    /// The mean score of those rows; `None` for an empty bin.
    pub mean_predicted: Option<f64>,
    /// The share of those rows that are attacks; `None` for an empty bin.
    pub observed_rate: Option<f64>,
}

/// How well scores read as probabilities of attack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// Ten equal-width bins over [0, 1].
    pub bins: Vec<ReliabilityBin>,
    /// The mean squared difference between score and outcome (1 for an attack, 0 for benign);
    /// `None` without rows.
    pub brier: Option<f64>,
}

/// Rows of one distinct score.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Group {
    score: f64,
    attacks: u64,
    benign: u64,
}

/// Scored rows, checked and sorted once so every metric reads them without sorting again.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Distinct scores, highest first, with how many attacks and benign rows have each.
    groups: Vec<Group>,
    attacks: u64,
    benign: u64,
}

impl Scores {
    /// Reads `(attack, score)` rows. A score that is NaN or infinite is refused, naming its row;
    /// `-0.0` is read as `0.0`.
    pub fn new(rows: impl IntoIterator<Item = (bool, f64)>) -> Result<Self, MetricsError> {
        let mut sorted = Vec::new();
        for (index, (attack, score)) in rows.into_iter().enumerate() {
            if !score.is_finite() {
                return Err(MetricsError::NotFinite { index, score });
            }
            // Adding 0.0 turns -0.0 into 0.0, so the two are one group under `total_cmp`.
            sorted.push((attack, score + 0.0));
        }
        sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut groups: Vec<Group> = Vec::new();
        let (mut attacks, mut benign) = (0, 0);
        for (attack, score) in sorted {
            let (a, b) = if attack { (1, 0) } else { (0, 1) };
            attacks += a;
            benign += b;
            match groups.last_mut() {
                Some(last) if last.score == score => {
                    last.attacks += a;
                    last.benign += b;
                }
                _ => groups.push(Group {
                    score,
                    attacks: a,
                    benign: b,
                }),
            }
        }
        Ok(Scores {
            groups,
            attacks,
            benign,
        })
    }

    /// All rows.
    pub fn len(&self) -> u64 {
        self.attacks + self.benign
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Attack rows.
    pub fn attacks(&self) -> u64 {
        self.attacks
    }

    /// Benign rows.
    pub fn benign(&self) -> u64 {
        self.benign
    }

    /// The rows at a threshold: a row is flagged when `score >= threshold`.
    pub fn confusion_at(&self, threshold: f64) -> Confusion {
        let (tp, fp) = self
            .groups
            .iter()
            .take_while(|g| g.score >= threshold)
            .fold((0, 0), |(tp, fp), g| (tp + g.attacks, fp + g.benign));
        Self::confusion(tp, fp, self.attacks, self.benign)
    }

    fn confusion(tp: u64, fp: u64, attacks: u64, benign: u64) -> Confusion {
        Confusion {
            tp,
            fp,
            tn: benign - fp,
            fn_: attacks - tp,
        }
    }

    /// Flagged attacks and benign rows as the threshold comes down through each distinct score,
    /// highest first.
    fn cumulative(&self) -> impl Iterator<Item = (f64, u64, u64)> + '_ {
        self.groups.iter().scan((0, 0), |(tp, fp), g| {
            *tp += g.attacks;
            *fp += g.benign;
            Some((g.score, *tp, *fp))
        })
    }

    /// The ROC curve: `(0, 0)` (nothing flagged), then one point per distinct score, highest
    /// first, ending at `(1, 1)`. Rows of equal score enter together, so a tie is a diagonal
    /// step. Empty unless there are both attacks and benign rows.
    pub fn roc_curve(&self) -> Vec<RocPoint> {
        if self.attacks == 0 || self.benign == 0 {
            return Vec::new();
        }
        let (p, n) = (self.attacks as f64, self.benign as f64);
        let start = RocPoint {
            threshold: None,
            fpr: 0.0,
            tpr: 0.0,
        };
        std::iter::once(start)
            .chain(self.cumulative().map(|(score, tp, fp)| RocPoint {
                threshold: Some(score),
                fpr: fp as f64 / n,
                tpr: tp as f64 / p,
            }))
            .collect()
    }

    /// The area under the ROC curve: the chance that a random attack scores above a random
    /// benign row, a tie counting as half (the trapezoid rule over [`Scores::roc_curve`]).
    /// `None` unless there are both attacks and benign rows.
    pub fn roc_auc(&self) -> Option<f64> {
        if self.attacks == 0 || self.benign == 0 {
            return None;
        }
        // Each benign row beats no attack below it, half of each attack tied with it, and loses
        // to every attack above it.
        let mut above = 0u64;
        let mut pairs = 0.0;
        for g in &self.groups {
            pairs += g.benign as f64 * (above as f64 + g.attacks as f64 / 2.0);
            above += g.attacks;
        }
        Some(pairs / (self.attacks as f64 * self.benign as f64))
    }

    /// The precision-recall curve: recall 0 at precision 1 (nothing flagged, by convention), then
    /// one point per distinct score, highest first. Empty without attacks.
    pub fn pr_curve(&self) -> Vec<PrPoint> {
        if self.attacks == 0 {
            return Vec::new();
        }
        let p = self.attacks as f64;
        let start = PrPoint {
            threshold: None,
            recall: 0.0,
            precision: 1.0,
        };
        std::iter::once(start)
            .chain(self.cumulative().map(|(score, tp, fp)| PrPoint {
                threshold: Some(score),
                recall: tp as f64 / p,
                precision: tp as f64 / (tp + fp) as f64,
            }))
            .collect()
    }

    /// The area under the precision-recall curve as average precision, step-wise as
    /// scikit-learn's `average_precision_score` defines it: `Σ (R_k - R_{k-1}) P_k` over the
    /// distinct scores, highest first, with `R_0 = 0` (no interpolation). `None` without
    /// attacks.
    pub fn average_precision(&self) -> Option<f64> {
        if self.attacks == 0 {
            return None;
        }
        let p = self.attacks as f64;
        let mut previous_recall = 0.0;
        let mut ap = 0.0;
        for (_, tp, fp) in self.cumulative() {
            let recall = tp as f64 / p;
            ap += (recall - previous_recall) * (tp as f64 / (tp + fp) as f64);
            previous_recall = recall;
        }
        Some(ap)
    }

    /// The operating point with the highest recall whose false-positive rate is at most
    /// `max_fpr`.
    ///
    /// The threshold is the smallest observed score `t` such that the benign rows with
    /// `score >= t` are at most `max_fpr` of all benign rows (the rate is computed as
    /// `fp / benign` in `f64` and compared with `<=`). Rows tied at a score are flagged
    /// together, so a tie that would cross the bound is left out whole. When even the highest
    /// score crosses it (or `max_fpr` is negative or NaN) the threshold is `None` and nothing is
    /// flagged. `None` without benign rows, where a false-positive rate is undefined.
    pub fn at_max_fpr(&self, max_fpr: f64) -> Option<FprPoint> {
        if self.benign == 0 {
            return None;
        }
        let n = self.benign as f64;
        let best = self
            .cumulative()
            .take_while(|&(_, _, fp)| fp as f64 / n <= max_fpr)
            .last();
        let (threshold, tp, fp) = match best {
            Some((score, tp, fp)) => (Some(score), tp, fp),
            None => (None, 0, 0),
        };
        Some(FprPoint {
            max_fpr,
            threshold,
            confusion: Self::confusion(tp, fp, self.attacks, self.benign),
        })
    }

    /// A reliability table of `bins` equal-width bins over [0, 1]: bin `i` holds the scores `s`
    /// with `⌊bins · s⌋ = i`, and the last bin also holds `s = 1`. Scores outside [0, 1] are
    /// refused; no bins are made when `bins` is 0.
    pub fn reliability(&self, bins: usize) -> Result<Vec<ReliabilityBin>, MetricsError> {
        let mut table: Vec<(u64, u64, f64)> = vec![(0, 0, 0.0); bins];
        for g in &self.groups {
            if !(0.0..=1.0).contains(&g.score) {
                return Err(MetricsError::NotAProbability { score: g.score });
            }
            let index = ((g.score * bins as f64) as usize).min(bins.saturating_sub(1));
            if let Some((count, attacks, sum)) = table.get_mut(index) {
                let rows = g.attacks + g.benign;
                *count += rows;
                *attacks += g.attacks;
                *sum += g.score * rows as f64;
            }
        }
        Ok(table
            .into_iter()
            .enumerate()
            .map(|(i, (count, attacks, sum))| ReliabilityBin {
                lower: i as f64 / bins as f64,
                upper: (i + 1) as f64 / bins as f64,
                count,
                mean_predicted: (count > 0).then(|| sum / count as f64),
                observed_rate: (count > 0).then(|| attacks as f64 / count as f64),
            })
            .collect())
    }

    /// The Brier score: the mean of `(score - outcome)²`, outcome 1 for an attack and 0 for a
    /// benign row. Scores outside [0, 1] are refused; `None` without rows.
    pub fn brier(&self) -> Result<Option<f64>, MetricsError> {
        let mut sum = 0.0;
        for g in &self.groups {
            if !(0.0..=1.0).contains(&g.score) {
                return Err(MetricsError::NotAProbability { score: g.score });
            }
            sum += g.attacks as f64 * (1.0 - g.score).powi(2) + g.benign as f64 * g.score.powi(2);
        }
        Ok((!self.is_empty()).then(|| sum / self.len() as f64))
    }

    /// Ten-bin reliability table and Brier score together.
    pub fn calibration(&self) -> Result<Calibration, MetricsError> {
        Ok(Calibration {
            bins: self.reliability(10)?,
            brier: self.brier()?,
        })
    }
}

/// The `q`-quantile of `values` (`q` in [0, 1]), interpolating linearly between the two nearest
/// ranks (numpy's default): the median of `[1, 2, 3, 4]` is 2.5. `None` for no values, a `q`
/// outside [0, 1], or a NaN among the values.
///
/// ```
/// use host_runtime::metrics::quantile;
///
/// assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.5), Some(2.5));
/// assert_eq!(quantile(&[], 0.5), None);
/// ```
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) || values.iter().any(|v| v.is_nan()) {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let last = sorted.len().checked_sub(1)?;
    let position = last as f64 * q;
    let below = position.floor() as usize;
    let above = position.ceil() as usize;
    let low = *sorted.get(below)?;
    let high = *sorted.get(above)?;
    Some(low + (position - below as f64) * (high - low))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    fn scores(rows: &[(bool, f64)]) -> Scores {
        Scores::new(rows.iter().copied()).unwrap()
    }

    /// Attacks at 0.9, 0.8, 0.6, 0.4 (one tied with a benign row at 0.4);
    /// benign at 0.7, 0.4, 0.3, 0.2, 0.1.
    const MIXED: [(bool, f64); 9] = [
        (true, 0.9),
        (true, 0.8),
        (false, 0.7),
        (true, 0.6),
        (true, 0.4),
        (false, 0.4),
        (false, 0.3),
        (false, 0.2),
        (false, 0.1),
    ];

    #[test]
    fn roc_auc_counts_pairs_and_ties_as_half() {
        // 4 attacks x 5 benign = 20 pairs. Benign 0.7 is beaten by 2 attacks; benign 0.4 by 3 and
        // tied with 1 (0.5); benign 0.3, 0.2, 0.1 by all 4 each: (2 + 3.5 + 12) / 20 = 0.875.
        assert!(close(scores(&MIXED).roc_auc().unwrap(), 17.5 / 20.0));
        // Perfect and reversed orderings.
        assert_eq!(scores(&[(true, 1.0), (false, 0.0)]).roc_auc(), Some(1.0));
        assert_eq!(scores(&[(true, 0.0), (false, 1.0)]).roc_auc(), Some(0.0));
        // Every score equal: every pair a tie.
        assert_eq!(
            scores(&[(true, 0.5), (false, 0.5), (true, 0.5)]).roc_auc(),
            Some(0.5)
        );
    }

    #[test]
    fn roc_curve_has_one_point_per_distinct_score() {
        let curve = scores(&MIXED).roc_curve();
        let points: Vec<(f64, f64)> = curve.iter().map(|p| (p.fpr, p.tpr)).collect();
        assert_eq!(
            points,
            vec![
                (0.0, 0.0),
                (0.0, 0.25),
                (0.0, 0.5),
                (0.2, 0.5),
                (0.2, 0.75),
                // The tie at 0.4 enters as one diagonal step.
                (0.4, 1.0),
                (0.6, 1.0),
                (0.8, 1.0),
                (1.0, 1.0),
            ]
        );
        assert_eq!(curve[0].threshold, None);
        assert_eq!(curve[5].threshold, Some(0.4));
        // The trapezoid area over the curve is the pair count.
        let area: f64 = curve
            .windows(2)
            .map(|w| (w[1].fpr - w[0].fpr) * (w[1].tpr + w[0].tpr) / 2.0)
            .sum();
        assert!(close(area, 0.875));
    }

    #[test]
    fn average_precision_is_stepwise() {
        // Thresholds from the top: 0.9 (R .25, P 1), 0.8 (R .5, P 1), 0.7 (R .5, P 2/3),
        // 0.6 (R .75, P 3/4), 0.4 (R 1, P 4/6), then recall no longer moves.
        // AP = .25 * 1 + .25 * 1 + 0 + .25 * .75 + .25 * 4/6 = 0.5 + 0.1875 + 1/6.
        let expected = 0.5 + 0.1875 + 1.0 / 6.0;
        assert!(close(scores(&MIXED).average_precision().unwrap(), expected));
        // A tie between an attack and a benign row at the top: one step, precision 1/2.
        assert_eq!(
            scores(&[(true, 0.5), (false, 0.5)]).average_precision(),
            Some(0.5)
        );
        // Attacks only: precision is 1 everywhere.
        assert_eq!(
            scores(&[(true, 0.2), (true, 0.1)]).average_precision(),
            Some(1.0)
        );
    }

    #[test]
    fn pr_curve_starts_at_full_precision() {
        let curve = scores(&MIXED).pr_curve();
        assert_eq!(curve.len(), 9);
        assert_eq!((curve[0].recall, curve[0].precision), (0.0, 1.0));
        assert_eq!((curve[3].recall, curve[3].threshold), (0.5, Some(0.7)));
        assert!(close(curve[3].precision, 2.0 / 3.0));
        assert!(close(curve[5].precision, 4.0 / 6.0));
        assert_eq!(curve[8].recall, 1.0);
        assert!(close(curve[8].precision, 4.0 / 9.0));
    }

    #[test]
    fn recall_at_a_bounded_false_positive_rate() {
        let s = scores(&MIXED);
        // No benign row may be flagged: the smallest such threshold is 0.8.
        let at = s.at_max_fpr(0.0).unwrap();
        assert_eq!(at.threshold, Some(0.8));
        assert_eq!(at.confusion.recall(), Some(0.5));
        // One benign row of five (20%): down to 0.6; at 0.4 the tie adds a second benign row.
        let at = s.at_max_fpr(0.2).unwrap();
        assert_eq!(at.threshold, Some(0.6));
        assert_eq!(
            at.confusion,
            Confusion {
                tp: 3,
                fp: 1,
                tn: 4,
                fn_: 1
            }
        );
        assert!(at.flags(0.6) && !at.flags(0.59));
        // 1% of five benign rows is none.
        assert_eq!(s.at_max_fpr(0.01).unwrap().threshold, Some(0.8));
        // Everything allowed: the lowest score.
        assert_eq!(s.at_max_fpr(1.0).unwrap().threshold, Some(0.1));

        // A benign row on top: no observed score keeps the rate at 0, so nothing is flagged.
        let top_benign = scores(&[(false, 0.9), (true, 0.5), (false, 0.1)]);
        let at = top_benign.at_max_fpr(0.0).unwrap();
        assert_eq!(at.threshold, None);
        assert_eq!(at.confusion.tp, 0);
        assert_eq!(at.confusion.recall(), Some(0.0));
        assert!(!at.flags(1.0));
        assert_eq!(top_benign.at_max_fpr(f64::NAN).unwrap().threshold, None);
        // A tie that crosses the bound is left out whole.
        let tie = scores(&[(true, 0.9), (true, 0.5), (false, 0.5), (false, 0.1)]);
        assert_eq!(tie.at_max_fpr(0.0).unwrap().threshold, Some(0.9));
    }

    #[test]
    fn confusion_at_a_threshold() {
        let c = scores(&MIXED).confusion_at(0.6);
        assert_eq!((c.tp, c.fp, c.tn, c.fn_), (3, 1, 4, 1));
        assert_eq!(c.precision(), Some(0.75));
        assert_eq!(c.recall(), Some(0.75));
        assert_eq!(c.fpr(), Some(0.2));
        assert!(close(c.f1().unwrap(), 0.75));
        // Ties at the threshold are flagged.
        let c = scores(&MIXED).confusion_at(0.4);
        assert_eq!((c.tp, c.fp), (4, 2));
        assert!(close(
            c.f1().unwrap(),
            2.0 * (4.0 / 6.0) / (4.0 / 6.0 + 1.0)
        ));
        // Nothing flagged: precision and F1 are undefined, recall 0.
        let c = scores(&MIXED).confusion_at(2.0);
        assert_eq!((c.precision(), c.recall(), c.f1()), (None, Some(0.0), None));
    }

    #[test]
    fn reliability_and_brier() {
        let s = scores(&[
            (true, 0.95),
            (false, 0.91),
            (true, 1.0),
            (false, 0.05),
            (false, 0.0),
            (true, 0.25),
        ]);
        let bins = s.reliability(10).unwrap();
        assert_eq!(bins.len(), 10);
        assert_eq!(bins[0].count, 2);
        assert_eq!(bins[0].mean_predicted, Some(0.025));
        assert_eq!(bins[0].observed_rate, Some(0.0));
        assert_eq!(bins[2].count, 1);
        assert_eq!(bins[2].observed_rate, Some(1.0));
        assert_eq!(bins[5].count, 0);
        assert_eq!(bins[5].mean_predicted, None);
        // 0.95, 0.91 and 1.0 share the last bin.
        assert_eq!(bins[9].count, 3);
        assert!(close(
            bins[9].mean_predicted.unwrap(),
            (0.95 + 0.91 + 1.0) / 3.0
        ));
        assert!(close(bins[9].observed_rate.unwrap(), 2.0 / 3.0));
        assert_eq!((bins[9].lower, bins[9].upper), (0.9, 1.0));
        // (0.05² + 0.91² + 0 + 0.05² + 0 + 0.75²) / 6
        let brier = (0.0025 + 0.8281 + 0.0025 + 0.5625) / 6.0;
        assert!(close(s.brier().unwrap().unwrap(), brier));
        let calibration = s.calibration().unwrap();
        assert_eq!(calibration.bins, bins);
        assert!(scores(&[(true, 1.5)]).brier().is_err());
        assert_eq!(
            scores(&[(true, -0.5)]).reliability(10),
            Err(MetricsError::NotAProbability { score: -0.5 })
        );
        assert!(s.reliability(0).unwrap().is_empty());
    }

    #[test]
    fn empty_and_one_class_input_answer_none() {
        let empty = scores(&[]);
        assert!(empty.is_empty());
        assert_eq!(empty.roc_auc(), None);
        assert_eq!(empty.average_precision(), None);
        assert!(empty.roc_curve().is_empty() && empty.pr_curve().is_empty());
        assert_eq!(empty.at_max_fpr(0.01), None);
        assert_eq!(empty.brier(), Ok(None));
        assert!(empty
            .reliability(10)
            .unwrap()
            .iter()
            .all(|b| b.count == 0 && b.mean_predicted.is_none()));
        assert_eq!(empty.confusion_at(0.5), Confusion::default());

        let attacks = scores(&[(true, 0.3), (true, 0.7)]);
        assert_eq!(attacks.roc_auc(), None);
        assert!(attacks.roc_curve().is_empty());
        assert_eq!(attacks.at_max_fpr(0.01), None);
        assert_eq!(attacks.pr_curve().len(), 3);

        let benign = scores(&[(false, 0.3), (false, 0.7)]);
        assert_eq!(benign.roc_auc(), None);
        assert_eq!(benign.average_precision(), None);
        assert!(benign.pr_curve().is_empty());
        let at = benign.at_max_fpr(0.5).unwrap();
        assert_eq!(at.threshold, Some(0.7));
        assert_eq!(at.confusion.recall(), None);
    }

    #[test]
    fn scores_that_are_not_finite_are_refused() {
        let err = Scores::new([(true, 0.5), (false, f64::NAN)]).unwrap_err();
        assert!(
            matches!(err, MetricsError::NotFinite { index: 1, score } if score.is_nan()),
            "{err:?}"
        );
        assert_eq!(err.to_string(), "row 1: score `NaN` is not a finite number");
        assert!(matches!(
            Scores::new([(true, f64::INFINITY)]),
            Err(MetricsError::NotFinite { index: 0, .. })
        ));
        // -0.0 and 0.0 are one score: the pair is a tie.
        assert_eq!(scores(&[(true, -0.0), (false, 0.0)]).roc_auc(), Some(0.5));
    }

    #[test]
    fn quantiles_interpolate_between_ranks() {
        assert_eq!(quantile(&[3.0], 0.95), Some(3.0));
        assert_eq!(quantile(&[4.0, 1.0, 3.0, 2.0], 0.5), Some(2.5));
        assert_eq!(quantile(&[5.0, 1.0, 3.0], 0.5), Some(3.0));
        // 1..=20: position 0.95 * 19 = 18.05, between 19 and 20.
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        assert!(close(quantile(&values, 0.95).unwrap(), 19.05));
        assert_eq!(quantile(&values, 0.0), Some(1.0));
        assert_eq!(quantile(&values, 1.0), Some(20.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[1.0, f64::NAN], 0.5), None);
        assert_eq!(quantile(&[1.0], 1.5), None);
    }
}
