//! What the CLI's benchmarks share: how many samples to take and their median.

/// Samples per measured kind: `var` (default 5) under `cargo bench`, which passes `--bench`;
/// 1 when the binary runs directly, as a quick check.
pub fn samples(var: &str) -> usize {
    if !benching() {
        return 1;
    }
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

/// Whether this is a real run (`cargo bench`), which warms up before it measures.
pub fn benching() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The median of `v` (the mean of the middle two for an even count); NaN for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
