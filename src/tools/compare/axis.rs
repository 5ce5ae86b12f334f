//! The chart's axes: where the labelled ticks go on a log scale, and how
//! a number reads on one.

/// Round values for a log axis from below `min` to above `max`: the
/// coarsest of 1-2-5, 1..9 and finer steps per decade that gives at least
/// five labels, so that no point sits far from one.
pub(super) fn ticks(min: f64, max: f64) -> Vec<f64> {
    const STEPS: [&[f64]; 3] = [
        &[1.0, 2.0, 5.0],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        &[
            1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0,
        ],
    ];
    let mut best = Vec::new();
    for mantissas in STEPS {
        let candidates: Vec<f64> = (-4..=10)
            .flat_map(|exp| mantissas.iter().map(move |m| m * 10f64.powi(exp)))
            .collect();
        // A little room on each side, so no point sits on the frame.
        let below = candidates.iter().rev().find(|&&t| t <= min * 0.95);
        let above = candidates.iter().find(|&&t| t >= max * 1.05);
        let (Some(&lo), Some(&hi)) = (below, above) else {
            continue;
        };
        best = candidates
            .into_iter()
            .filter(|&t| t >= lo && t <= hi)
            .collect();
        if best.len() >= 5 {
            break;
        }
    }
    if best.len() < 2 {
        best = vec![min, max];
    }
    best
}

/// `150k`, `1.5k`, `2.5M`, `0.25`: three significant digits at most.
pub(super) fn format_number(y: f64) -> String {
    let (value, suffix) = if y >= 1e6 {
        (y / 1e6, "M")
    } else if y >= 1e3 {
        (y / 1e3, "k")
    } else {
        (y, "")
    };
    let digits = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{value:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value lies between two labelled ticks, with enough of them.
    #[test]
    fn ticks_surround_every_value() {
        for (min, max) in [
            (58_000.0, 150_000.0),
            (70_000.0, 100_000.0),
            (0.1, 2.0),
            (3.0, 3.0),
        ] {
            let t = ticks(min, max);
            assert!(t.len() >= 3, "{min}..{max}: {t:?}");
            assert!(t[0] <= min && t[t.len() - 1] >= max, "{min}..{max}: {t:?}");
        }
    }

    #[test]
    fn numbers_read_short() {
        assert_eq!(format_number(150_000.0), "150k");
        assert_eq!(format_number(1_500.0), "1.5k");
        assert_eq!(format_number(2_500_000.0), "2.5M");
        assert_eq!(format_number(0.25), "0.25");
        assert_eq!(format_number(60_000.0), "60k");
    }
}
