//! Ranking and threshold metrics of a scorer against labels.

use serde::{Deserialize, Serialize};

/// Figures of one scorer on one labeled set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub examples: usize,
    pub positives: usize,
    pub roc_auc: f64,
    /// Average precision (area under the precision-recall curve).
    pub pr_auc: f64,
    /// The probability threshold with the best F1, and the figures there.
    pub threshold: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// The lowest threshold keeping precision >= 0.9, and its recall.
    pub threshold_p90: Option<f64>,
    pub recall_at_p90: Option<f64>,
}

/// Points of a precision-recall curve: (threshold, precision, recall).
pub type Curve = Vec<(f64, f64, f64)>;

/// (threshold, precision, recall) along the ranking, highest scores first.
pub fn pr_curve(scores: &[f64], labels: &[bool]) -> Curve {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let pos = labels.iter().filter(|&&l| l).count().max(1) as f64;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut out = Vec::with_capacity(scores.len());
    let mut i = 0;
    while i < order.len() {
        // Ties move together.
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if labels[order[i]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            i += 1;
        }
        out.push((s, tp / (tp + fp), tp / pos));
    }
    out
}

/// ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j < order.len() && scores[order[j]] == scores[order[i]] {
            j += 1;
        }
        let avg = (i + j + 1) as f64 / 2.0;
        for &k in &order[i..j] {
            if labels[k] {
                rank_sum += avg;
            }
        }
        i = j;
    }
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return 0.5;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// All the figures; `scores` are probabilities.
pub fn metrics(scores: &[f64], labels: &[bool]) -> Metrics {
    let curve = pr_curve(scores, labels);
    let mut ap = 0.0;
    let mut last_recall = 0.0;
    let mut best = (0.0, 0.5, 0.0, 0.0);
    let mut p90: Option<(f64, f64)> = None;
    for &(t, p, r) in &curve {
        ap += p * (r - last_recall);
        last_recall = r;
        let f1 = if p + r > 0.0 {
            2.0 * p * r / (p + r)
        } else {
            0.0
        };
        if f1 > best.0 {
            best = (f1, t, p, r);
        }
        if p >= 0.9 && p90.is_none_or(|(_, br)| r > br) {
            p90 = Some((t, r));
        }
    }
    Metrics {
        examples: scores.len(),
        positives: labels.iter().filter(|&&l| l).count(),
        roc_auc: roc_auc(scores, labels),
        pr_auc: ap,
        threshold: best.1,
        precision: best.2,
        recall: best.3,
        f1: best.0,
        threshold_p90: p90.map(|x| x.0),
        recall_at_p90: p90.map(|x| x.1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_random_rankings() {
        let labels = [true, true, false, false];
        let m = metrics(&[0.9, 0.8, 0.2, 0.1], &labels);
        assert_eq!((m.roc_auc, m.pr_auc, m.f1), (1.0, 1.0, 1.0));
        assert_eq!(m.threshold, 0.8);
        let m = metrics(&[0.5, 0.5, 0.5, 0.5], &labels);
        assert_eq!(m.roc_auc, 0.5);
        let m = metrics(&[0.1, 0.2, 0.8, 0.9], &labels);
        assert_eq!(m.roc_auc, 0.0);
    }
}
