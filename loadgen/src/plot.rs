//! Latency plots: HdrHistogram percentile files read back, and SVG curves by percentile
//! drawn by hand (no plotting dependency for one kind of chart).

use std::fmt::Write as _;

/// Reads an `.hgrm` file as `(value_ms, percentile 0..=1)` rows.
pub fn parse_hgrm(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let v = it.next()?.parse::<f64>().ok()?;
            let p = it.next()?.parse::<f64>().ok()?;
            Some((v, p))
        })
        .collect()
}

/// x position of a percentile: log10(1 / (1 - p)), capped at 99.999 %.
fn x_of(p: f64) -> f64 {
    let cap = 5.0;
    if p >= 1.0 {
        cap
    } else {
        (1.0 / (1.0 - p)).log10().min(cap)
    }
}

/// `s` escaped for SVG text.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A hand-written SVG: latency (ms, log scale) against percentile (HdrHistogram style).
pub fn latency_svg(title: &str, curves: &[(String, Vec<(f64, f64)>)]) -> String {
    const W: f64 = 900.0;
    const H: f64 = 520.0;
    const L: f64 = 80.0;
    const R: f64 = 30.0;
    const T: f64 = 50.0;
    const B: f64 = 60.0;
    const COLORS: [&str; 8] = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    ];
    let values = curves
        .iter()
        .flat_map(|(_, rows)| rows.iter().map(|r| r.0))
        .filter(|v| *v > 0.0);
    let (lo, hi) = values.fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo > hi { (0.01, 1000.0) } else { (lo, hi) };
    let y0 = lo.log10().floor();
    let y1 = hi.log10().ceil().max(y0 + 1.0);
    let px = |x: f64| L + x / 5.0 * (W - L - R);
    let py = |v: f64| {
        let v = v.max(10f64.powf(y0));
        T + (y1 - v.log10()) / (y1 - y0) * (H - T - B)
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#,
        W / 2.0,
        esc(title)
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let x = px(i as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"##,
            H - B,
            H - B + 18.0
        );
    }
    let mut d = y0;
    while d <= y1 + 1e-9 {
        let v = 10f64.powf(d);
        let y = py(v);
        let label = if v >= 1.0 {
            format!("{v:.0}")
        } else {
            format!("{v}")
        };
        let _ = writeln!(
            s,
            r##"<line x1="{L}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"##,
            W - R,
            L - 6.0,
            y + 4.0
        );
        d += 1.0;
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#,
        (L + W - R) / 2.0,
        H - 15.0
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="{}" text-anchor="middle" transform="rotate(-90 20 {})">latency (ms, log scale)</text>"#,
        (T + H - B) / 2.0,
        (T + H - B) / 2.0
    );
    let _ = writeln!(
        s,
        r##"<rect x="{L}" y="{T}" width="{}" height="{}" fill="none" stroke="#444"/>"##,
        W - L - R,
        H - T - B
    );
    for (i, (name, rows)) in curves.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<String> = rows
            .iter()
            .map(|&(v, p)| format!("{:.1},{:.1}", px(x_of(p)), py(v)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            points.join(" ")
        );
        let ly = T + 18.0 + i as f64 * 18.0;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            L + 12.0,
            L + 36.0,
            L + 42.0,
            ly + 4.0,
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hgrm_rows_parse_and_the_svg_has_one_line_per_curve() {
        let mut rec = crate::stats::Recorder::default();
        for v in 1..=1000u64 {
            rec.record_latency(v * 10, 1);
        }
        let rows = parse_hgrm(&crate::stats::hgrm(&rec.latency));
        assert!(rows.len() > 10);
        assert_eq!(rows.last().unwrap().1, 1.0);
        let svg = latency_svg("t <x>", &[("a".into(), rows.clone()), ("b".into(), rows)]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("t &lt;x&gt;"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
