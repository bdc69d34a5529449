//! Numbers for people: bytes with a binary unit, counts and rates with a decimal one, three
//! significant figures, each rounded as it will be printed (so 1023.6 bytes is `1.00K`, never
//! `1024B`). One formatter per kind, so the table, `top` and the logs agree at every boundary.

/// Bytes with a binary unit: `0B`, `512B`, `12.3K`, `1.81G`.
#[must_use]
pub fn human_bytes(bytes: u64) -> String {
    binary(bytes as f64)
}

/// Bytes in MiB with one decimal, whatever their size: for a sentence that compares several
/// figures (the advice's evidence), where one unit reads better than three figures each.
#[must_use]
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// A signed change of bytes (or bytes per second) with a binary unit: `+1.20M`, `-512B`, `0`.
#[must_use]
pub fn signed_bytes(bytes: f64) -> String {
    let magnitude = bytes.abs();
    if magnitude < 0.5 {
        return "0".to_owned();
    }
    let sign = if bytes > 0.0 { '+' } else { '-' };
    format!("{sign}{}", binary(magnitude))
}

/// A non-negative magnitude of bytes, as [`human_bytes`] prints it.
fn binary(magnitude: f64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if magnitude < 1023.5 {
        return format!("{magnitude:.0}B");
    }
    let (v, unit) = scale(magnitude, 1024.0, &UNITS);
    three_figures(v, unit)
}

/// A count or a rate, three significant figures with a decimal unit: `0`, `2.5`, `640`,
/// `12.3k`, `1.20M`.
#[must_use]
pub fn count(value: f64) -> String {
    const UNITS: [&str; 4] = ["k", "M", "G", "T"];
    if value == 0.0 {
        return "0".to_owned();
    }
    if value.abs() < 9.95 {
        return format!("{value:.1}");
    }
    if value.abs() < 999.5 {
        return format!("{value:.0}");
    }
    let (v, unit) = scale(value, 1000.0, &UNITS);
    three_figures(v, unit)
}

/// A number of objects: exact below a thousand, then as [`count`].
#[must_use]
pub fn objects(n: u64) -> String {
    if n < 1000 { n.to_string() } else { count(n as f64) }
}

/// `v` divided by `base` until it prints below `base` (rounded as it will be printed, so
/// 999.7k becomes 1.00M and not "1000k", and 1023.7K 1.00M), with the unit reached.
fn scale(mut v: f64, base: f64, units: &[&'static str]) -> (f64, &'static str) {
    let mut unit = "";
    for &u in units {
        if v.abs() < base - 0.5 {
            break;
        }
        v /= base;
        unit = u;
    }
    (v, unit)
}

/// `v` (below a thousand or so) with `unit`, to three significant figures.
fn three_figures(v: f64, unit: &str) -> String {
    if v.abs() < 9.995 {
        format!("{v:.2}{unit}")
    } else if v.abs() < 99.95 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.0}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(0), "0B");
        assert_eq!(human_bytes(1023), "1023B");
        assert_eq!(human_bytes(1024), "1.00K");
        assert_eq!(human_bytes(1536 * 1024), "1.50M");
        assert_eq!(human_bytes(123 * 1024 * 1024 * 1024), "123G");
        // At a unit's boundary the rounding moves up a unit, as the signed form does.
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.00M");
        assert_eq!(human_bytes(1024 * 1024 - 1), signed_bytes(1024.0 * 1024.0 - 1.0)[1..]);
    }

    #[test]
    fn changes_are_signed() {
        let cases = [
            (0.0, "0"),
            (0.4, "0"),
            (-0.4, "0"),
            (512.0, "+512B"),
            (-512.0, "-512B"),
            (1023.6, "+1.00K"),
            (1536.0 * 1024.0, "+1.50M"),
            (-200.0 * 1024.0 * 1024.0, "-200M"),
        ];
        for (value, text) in cases {
            assert_eq!(signed_bytes(value), text, "{value}");
        }
    }

    #[test]
    fn counts_and_rates_are_short() {
        let cases = [
            (0.0, "0"),
            (0.26, "0.3"),
            (2.5, "2.5"),
            (9.96, "10"),
            (640.0, "640"),
            (999.4, "999"),
            (999.6, "1.00k"),
            (12_345.0, "12.3k"),
            (123_456.0, "123k"),
            (999_700.0, "1.00M"),
            (1_200_000.0, "1.20M"),
            (3e9, "3.00G"),
        ];
        for (value, text) in cases {
            assert_eq!(count(value), text, "{value}");
        }
    }

    #[test]
    fn objects_are_whole() {
        let cases = [(0, "0"), (3, "3"), (999, "999"), (1000, "1.00k"), (21_000, "21.0k")];
        for (n, text) in cases {
            assert_eq!(objects(n), text, "{n}");
        }
    }
}
