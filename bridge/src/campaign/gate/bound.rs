//! Confidence bounds for the gate's failure rate.
//!
//! Why: a wave's first verdicts are biased towards failure. An install
//! failure is reported as soon as the download ends, while a firmware
//! success needs a reboot and a health check first, so the first devices
//! to finish are disproportionately failures; and a small sample swings
//! wildly (2 failures of 3 is 67%). A wave whose true failure rate was 29%
//! once halted at a measured 80%. The gate therefore halts only when the
//! *lower* Wilson score bound of the failure rate is above the halt bar:
//! the rate is then above the bar with 95% confidence (one-sided), however
//! few devices decided. Devices that are rebooting into the new image
//! count as not failed in the denominator until they report, which
//! removes the reboot's head start.
//!
//! The pass side needs no bound: a wave passes when its successes reach
//! the bar over *all* its applicable devices, pending ones included, which
//! is already the pessimistic reading.

/// z for a one-sided 95% bound.
const Z: f64 = 1.645;

/// The lower Wilson score bound of `k` of `n`, in basis points (0 when
/// `n` is 0). Rounded down, so a bound "above the bar" is never rounded
/// into it.
pub fn wilson_lower_bp(k: u32, n: u32) -> u16 {
    if n == 0 {
        return 0;
    }
    let k = f64::from(k.min(n));
    let n = f64::from(n);
    let p = k / n;
    let z2 = Z * Z;
    let centre = p + z2 / (2.0 * n);
    let spread = Z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    let lower = ((centre - spread) / (1.0 + z2 / n)).clamp(0.0, 1.0);
    // lower <= 1.0, so the product fits a u16.
    (lower * 10_000.0).floor() as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(wilson_lower_bp(0, 0), 0);
        assert_eq!(wilson_lower_bp(0, 10), 0);
        // 1 of 1: 1 / (1 + z²) = 0.2698
        assert_eq!(wilson_lower_bp(1, 1), 2698);
        // 10 of 100 at z = 1.645: 0.0607
        assert_eq!(wilson_lower_bp(10, 100), 607);
        // 100 of 100: 100 / (100 + z²) = 0.9736
        assert_eq!(wilson_lower_bp(100, 100), 9736);
        // more successes than trials are read as n of n
        assert_eq!(wilson_lower_bp(5, 3), wilson_lower_bp(3, 3));
    }

    #[test]
    fn the_bound_rises_with_the_sample() {
        // The same 20% rate is more certain with more devices.
        let small = wilson_lower_bp(2, 10);
        let large = wilson_lower_bp(200, 1000);
        assert!(small < large, "{small} {large}");
        assert!(large < 2000);
    }
}
