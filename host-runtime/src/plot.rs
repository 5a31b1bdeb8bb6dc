//! ROC and precision-recall curves as one self-contained SVG, for the evaluation report.
//!
//! Hand-written SVG 1.1, no scripts, fonts or external references, and the same bytes for the same
//! curves. Two panels side by side: ROC with the false-positive rate on a log scale (the region
//! a guard is run in, a false-positive rate of 1% or less, would otherwise be a sliver at the
//! left edge), and precision against recall drawn as steps, as average precision measures it.
//! Each scorer is one `<path>` in each panel; axes, ticks and legend swatches are `<line>`s.

use crate::metrics::{PrPoint, RocPoint};

/// One scorer's curves.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// Its name in the legend.
    pub name: &'a str,
    /// Its ROC curve, from [`crate::metrics::Scores::roc_curve`].
    pub roc: &'a [RocPoint],
    /// Its precision-recall curve, from [`crate::metrics::Scores::pr_curve`].
    pub pr: &'a [PrPoint],
    /// The area under the ROC curve, shown in the legend.
    pub roc_auc: Option<f64>,
    /// Average precision, shown in the legend.
    pub average_precision: Option<f64>,
    /// Which colour and dash pattern to draw with (taken modulo the palette's size): give each
    /// scorer a fixed one so it looks the same in every report.
    pub style: usize,
}

/// Colour and dash pattern of each series in turn, so curves that coincide stay visible.
const STYLES: [(&str, &str); 6] = [
    ("#1f77b4", ""),
    ("#ff7f0e", "7 4"),
    ("#2ca02c", "3 3"),
    ("#d62728", ""),
    ("#9467bd", "7 4"),
    ("#8c564b", "3 3"),
];

const WIDTH: f64 = 960.0;
const PLOT_W: f64 = 360.0;
const PLOT_H: f64 = 300.0;
const TOP: f64 = 50.0;
const ROC_LEFT: f64 = 80.0;
const PR_LEFT: f64 = 560.0;
const LEGEND_TOP: f64 = TOP + PLOT_H + 62.0;
const LEGEND_LINE: f64 = 18.0;

/// A plot region: data ranges mapped to pixels.
struct Panel {
    left: f64,
    /// log10 of the smallest false-positive rate shown, for the log axis; `None` for linear.
    log_min: Option<f64>,
}

impl Panel {
    fn x(&self, value: f64) -> f64 {
        let unit = match self.log_min {
            Some(min) => {
                let v = value.max(10f64.powf(min)).log10();
                (v - min) / -min
            }
            None => value,
        };
        self.left + unit.clamp(0.0, 1.0) * PLOT_W
    }

    fn y(&self, value: f64) -> f64 {
        TOP + (1.0 - value.clamp(0.0, 1.0)) * PLOT_H
    }
}

/// The ROC and precision-recall panels for `series`. `attacks` and `benign` are the row counts:
/// the ROC axis starts at the decade below one benign row (`FPR = 1/benign`, at most 10%), a
/// false-positive rate of 0 is drawn at the left edge, and the precision of a detector that
/// flags everything (the attack share) is drawn as a reference line.
///
/// ```
/// use host_runtime::metrics::Scores;
/// use host_runtime::plot::{roc_pr_svg, Series};
///
/// let scores = Scores::new([(true, 0.9), (false, 0.2), (true, 0.4)]).unwrap();
/// let (roc, pr) = (scores.roc_curve(), scores.pr_curve());
/// let series = Series {
///     name: "rules",
///     roc: &roc,
///     pr: &pr,
///     roc_auc: scores.roc_auc(),
///     average_precision: scores.average_precision(),
///     style: 0,
/// };
/// let svg = roc_pr_svg(&[series], scores.attacks(), scores.benign());
/// assert!(svg.starts_with("<svg"));
/// assert_eq!(svg.matches("<path").count(), 2);
/// ```
pub fn roc_pr_svg(series: &[Series<'_>], attacks: u64, benign: u64) -> String {
    let legend_rows = series.len().max(1) as f64;
    let height = LEGEND_TOP + legend_rows * LEGEND_LINE + 10.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"{WIDTH}\" height=\"{height}\" fill=\"#ffffff\"/>\n"
    );
    // The decade at or below one benign row, between 1e-6 and 1e-1.
    let log_min = if benign > 0 {
        (1.0 / benign as f64).log10().floor().clamp(-6.0, -1.0)
    } else {
        -2.0
    };
    let roc = Panel {
        left: ROC_LEFT,
        log_min: Some(log_min),
    };
    let pr = Panel {
        left: PR_LEFT,
        log_min: None,
    };

    // ROC panel.
    frame(
        &mut svg,
        &roc,
        "ROC (false-positive rate on a log scale)",
        "false-positive rate",
        "true-positive rate (recall)",
    );
    let mut decade = log_min;
    while decade <= 0.0 {
        let value = 10f64.powf(decade);
        x_tick(&mut svg, &roc, value, &percent(value));
        decade += 1.0;
    }
    for i in 0..=5 {
        let value = f64::from(i) / 5.0;
        y_tick(&mut svg, &roc, value, &format!("{value:.1}"));
    }
    if log_min < -2.0 {
        let x = roc.x(0.01);
        svg.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#888888\" \
             stroke-dasharray=\"4 3\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#555555\">1% FPR</text>\n",
            roc.y(1.0),
            roc.y(0.0),
            x + 4.0,
            roc.y(0.0) - 6.0
        ));
    }
    for s in series {
        curve(
            &mut svg,
            s.style,
            "roc",
            s.name,
            roc_vertices(&roc, s.roc).into_iter(),
        );
    }
    legend(&mut svg, &roc, series, |s| {
        format!("{} (ROC AUC {})", s.name, three(s.roc_auc))
    });

    // Precision-recall panel.
    frame(
        &mut svg,
        &pr,
        "Precision-recall (average precision as steps)",
        "recall",
        "precision",
    );
    for i in 0..=5 {
        let value = f64::from(i) / 5.0;
        x_tick(&mut svg, &pr, value, &format!("{value:.1}"));
        y_tick(&mut svg, &pr, value, &format!("{value:.1}"));
    }
    let rows = attacks + benign;
    if rows > 0 {
        let share = attacks as f64 / rows as f64;
        let y = pr.y(share);
        svg.push_str(&format!(
            "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#888888\" \
             stroke-dasharray=\"4 3\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#555555\">attack share {}</text>\n",
            pr.x(0.0),
            pr.x(1.0),
            pr.x(0.0) + 6.0,
            y - 5.0,
            percent(share)
        ));
    }
    for s in series {
        // Precision P_k holds over (R_{k-1}, R_k]: up or down at R_{k-1}, then across to R_k.
        let mut steps = Vec::with_capacity(s.pr.len() * 2);
        let mut previous: Option<&PrPoint> = None;
        for p in s.pr {
            if let Some(q) = previous {
                steps.push((pr.x(q.recall), pr.y(p.precision)));
            }
            steps.push((pr.x(p.recall), pr.y(p.precision)));
            previous = Some(p);
        }
        curve(&mut svg, s.style, "pr", s.name, steps.into_iter());
    }
    legend(&mut svg, &pr, series, |s| {
        format!(
            "{} (average precision {})",
            s.name,
            three(s.average_precision)
        )
    });

    svg.push_str("</svg>\n");
    svg
}

fn three(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_string(), |v| format!("{v:.3}"))
}

fn percent(x: f64) -> String {
    let p = x * 100.0;
    if p >= 1.0 {
        format!("{p:.0}%")
    } else {
        // Enough decimals for the first significant digit: 0.1%, 0.01%, ...
        let decimals = (-p.log10() - 1e-9).ceil().max(0.0) as usize;
        format!("{p:.decimals$}%")
    }
}

/// Text safe inside SVG elements and attributes.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn frame(svg: &mut String, panel: &Panel, title: &str, x_label: &str, y_label: &str) {
    let left = panel.left;
    let (top, bottom) = (TOP, TOP + PLOT_H);
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"14\" font-weight=\"bold\" \
         text-anchor=\"middle\">{}</text>\n",
        left + PLOT_W / 2.0,
        TOP - 18.0,
        escape(title)
    ));
    svg.push_str(&format!(
        "<rect x=\"{left:.1}\" y=\"{top:.1}\" width=\"{PLOT_W:.1}\" height=\"{PLOT_H:.1}\" \
         fill=\"none\" stroke=\"#333333\"/>\n"
    ));
    svg.push_str(&format!(
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
        left + PLOT_W / 2.0,
        bottom + 40.0,
        escape(x_label)
    ));
    let (x, y) = (left - 48.0, top + PLOT_H / 2.0);
    svg.push_str(&format!(
        "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"middle\" \
         transform=\"rotate(-90 {x:.1} {y:.1})\">{}</text>\n",
        escape(y_label)
    ));
}

fn x_tick(svg: &mut String, panel: &Panel, value: f64, label: &str) {
    let x = panel.x(value);
    let bottom = TOP + PLOT_H;
    svg.push_str(&format!(
        "<line x1=\"{x:.1}\" y1=\"{TOP:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\" stroke=\"#e5e5e5\"/>\n\
         <line x1=\"{x:.1}\" y1=\"{bottom:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#333333\"/>\n\
         <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
        bottom + 5.0,
        bottom + 19.0,
        escape(label)
    ));
}

fn y_tick(svg: &mut String, panel: &Panel, value: f64, label: &str) {
    let y = panel.y(value);
    let left = panel.left;
    svg.push_str(&format!(
        "<line x1=\"{left:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e5e5e5\"/>\n\
         <line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{left:.1}\" y2=\"{y:.1}\" stroke=\"#333333\"/>\n\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
        left + PLOT_W,
        left - 5.0,
        left - 8.0,
        y + 4.0,
        escape(label)
    ));
}

/// The ROC curve's vertices in pixels. Between two points the curve is the straight line of
/// linear FPR (what flagging a random share of the rows at the lower threshold achieves, and
/// how ties are counted); on the log axis that line bends, so a segment wider than a few pixels
/// gets intermediate vertices along it.
fn roc_vertices(panel: &Panel, points: &[RocPoint]) -> Vec<(f64, f64)> {
    const STEP_PX: f64 = 3.0;
    let mut out = Vec::with_capacity(points.len());
    let mut previous: Option<&RocPoint> = None;
    for p in points {
        if let Some(q) = previous {
            let width = (panel.x(p.fpr) - panel.x(q.fpr)).abs();
            let pieces = (width / STEP_PX).ceil().min(400.0) as u32;
            for k in 1..pieces {
                let t = f64::from(k) / f64::from(pieces);
                let fpr = q.fpr + t * (p.fpr - q.fpr);
                let tpr = q.tpr + t * (p.tpr - q.tpr);
                out.push((panel.x(fpr), panel.y(tpr)));
            }
        }
        out.push((panel.x(p.fpr), panel.y(p.tpr)));
        previous = Some(p);
    }
    out
}

/// One series as one path; vertices closer than half a pixel to the last one drawn are
/// skipped, except the final vertex.
fn curve(
    svg: &mut String,
    index: usize,
    panel: &str,
    name: &str,
    points: impl Iterator<Item = (f64, f64)>,
) {
    let (colour, dash) = STYLES
        .get(index % STYLES.len())
        .copied()
        .unwrap_or(("#000000", ""));
    let mut d = String::new();
    let mut last_drawn: Option<(f64, f64)> = None;
    let mut pending: Option<(f64, f64)> = None;
    for (x, y) in points {
        match last_drawn {
            None => {
                d.push_str(&format!("M{x:.1},{y:.1}"));
                last_drawn = Some((x, y));
            }
            Some((lx, ly)) if (x - lx).abs() < 0.5 && (y - ly).abs() < 0.5 => {
                pending = Some((x, y));
            }
            Some(_) => {
                d.push_str(&format!(" L{x:.1},{y:.1}"));
                last_drawn = Some((x, y));
                pending = None;
            }
        }
    }
    if let Some((x, y)) = pending.filter(|&p| Some(p) != last_drawn) {
        d.push_str(&format!(" L{x:.1},{y:.1}"));
    }
    let dash = if dash.is_empty() {
        String::new()
    } else {
        format!(" stroke-dasharray=\"{dash}\"")
    };
    svg.push_str(&format!(
        "<path class=\"{panel}\" data-series=\"{}\" d=\"{d}\" fill=\"none\" stroke=\"{colour}\" \
         stroke-width=\"2\" stroke-linejoin=\"round\"{dash}/>\n",
        escape(name)
    ));
}

fn legend(
    svg: &mut String,
    panel: &Panel,
    series: &[Series<'_>],
    label: impl Fn(&Series<'_>) -> String,
) {
    for (i, s) in series.iter().enumerate() {
        let (colour, dash) = STYLES
            .get(s.style % STYLES.len())
            .copied()
            .unwrap_or(("#000000", ""));
        let y = LEGEND_TOP + i as f64 * LEGEND_LINE;
        let x = panel.left;
        let dash = if dash.is_empty() {
            String::new()
        } else {
            format!(" stroke-dasharray=\"{dash}\"")
        };
        svg.push_str(&format!(
            "<line x1=\"{x:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{colour}\" \
             stroke-width=\"2\"{dash}/>\n<text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            x + 28.0,
            x + 36.0,
            y + 4.0,
            escape(&label(s))
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Scores;

    fn svg_for(rows: &[(bool, f64)], names: &[&str]) -> String {
        let scores = Scores::new(rows.iter().copied()).unwrap();
        let (roc, pr) = (scores.roc_curve(), scores.pr_curve());
        let series: Vec<Series<'_>> = names
            .iter()
            .enumerate()
            .map(|(style, name)| Series {
                name,
                roc: &roc,
                pr: &pr,
                roc_auc: scores.roc_auc(),
                average_precision: scores.average_precision(),
                style,
            })
            .collect();
        roc_pr_svg(&series, scores.attacks(), scores.benign())
    }

    #[test]
    fn one_path_per_series_per_panel_and_the_same_bytes_each_time() {
        let rows = [(true, 0.9), (false, 0.7), (true, 0.6), (false, 0.1)];
        let svg = svg_for(&rows, &["rules", "a<b&c"]);
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<path class=\"roc\"").count(), 2);
        assert_eq!(svg.matches("<path class=\"pr\"").count(), 2);
        assert_eq!(svg.matches("<path").count(), 4);
        assert!(svg.contains("a&lt;b&amp;c (ROC AUC 0.750)"), "{svg}");
        assert!(!svg.contains("a<b"));
        assert_eq!(svg, svg_for(&rows, &["rules", "a<b&c"]));
    }

    #[test]
    fn roc_starts_at_the_left_edge_and_pr_is_drawn_as_steps() {
        let rows = [(true, 0.9), (false, 0.7), (true, 0.6), (false, 0.1)];
        let svg = svg_for(&rows, &["x"]);
        // Two benign rows: the log axis starts at 10% and FPR 0 is drawn at x = 80.
        assert!(svg.contains(">10%</text>") && svg.contains(">100%</text>"));
        assert!(svg.contains("class=\"roc\" data-series=\"x\" d=\"M80.0,350.0 L80.0,200.0"));
        // PR points (0, 1), (0.5, 1), (0.5, 1/2), (1, 2/3), (1, 1/2) as steps: across to
        // (0.5, 1), down to (0.5, 1/2), up to (0.5, 2/3), across to (1, 2/3), down to (1, 1/2).
        assert!(
            svg.contains(
                "class=\"pr\" data-series=\"x\" d=\"M560.0,50.0 L740.0,50.0 L740.0,200.0 \
                 L740.0,150.0 L920.0,150.0 L920.0,200.0\""
            ),
            "{svg}"
        );
    }

    #[test]
    fn one_class_input_draws_empty_curves() {
        let svg = svg_for(&[(true, 0.3)], &["x"]);
        assert!(svg.contains("class=\"roc\" data-series=\"x\" d=\"\""));
        assert_eq!(svg.matches("<path").count(), 2);
        assert!(svg.contains("ROC AUC n/a"));
        let none = roc_pr_svg(&[], 0, 0);
        assert!(none.starts_with("<svg") && !none.contains("<path"));
    }

    #[test]
    fn percent_labels() {
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(0.01), "1%");
        assert_eq!(percent(0.001), "0.1%");
        assert_eq!(percent(0.0001), "0.01%");
        assert_eq!(percent(0.3), "30%");
    }
}
