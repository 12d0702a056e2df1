//! Resource quantities as Kubernetes users read them: `500m` or `2` for cpu, `512Mi` or `3.7Gi`
//! for bytes. Used in filter reasons here and by the CLI.

/// Binary suffixes, largest first.
const BINARY_UNITS: [(u64, &str); 6] = [
    (1 << 60, "Ei"),
    (1 << 50, "Pi"),
    (1 << 40, "Ti"),
    (1 << 30, "Gi"),
    (1 << 20, "Mi"),
    (1 << 10, "Ki"),
];

/// Above this many units an exact form (`3906250Ki`) is harder to read than an approximate one.
const EXACT_DIGITS_LIMIT: u64 = 10_000;

/// Formats thousandths of a core: whole cores as `2`, anything else in millicores as `500m`.
pub fn format_cpu(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// Formats bytes with binary suffixes: exactly (`512Mi`, `1536Mi`) when the value is a short
/// multiple of a unit, otherwise truncated to one decimal in the largest unit (`3.7Gi`), so a
/// printed free amount never looks larger than it is. Below 1Ki: plain bytes (`1000`).
pub fn format_bytes(bytes: u64) -> String {
    if bytes == 0 {
        return "0".to_string();
    }
    for (size, suffix) in BINARY_UNITS {
        if bytes.is_multiple_of(size) && bytes / size < EXACT_DIGITS_LIMIT {
            return format!("{}{suffix}", bytes / size);
        }
    }
    for (size, suffix) in BINARY_UNITS {
        if bytes >= size {
            let tenths = u128::from(bytes) * 10 / u128::from(size);
            return format!("{}.{}{suffix}", tenths / 10, tenths % 10);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_whole_cores_or_millicores() {
        assert_eq!(format_cpu(0), "0");
        assert_eq!(format_cpu(50), "50m");
        assert_eq!(format_cpu(500), "500m");
        assert_eq!(format_cpu(1000), "1");
        assert_eq!(format_cpu(1500), "1500m");
        assert_eq!(format_cpu(4000), "4");
    }

    #[test]
    fn bytes_are_exact_when_short() {
        assert_eq!(format_bytes(0), "0");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(format_bytes(1024), "1Ki");
        assert_eq!(format_bytes(32 << 20), "32Mi");
        assert_eq!(format_bytes(512 << 20), "512Mi");
        assert_eq!(format_bytes(1536 << 20), "1536Mi");
        assert_eq!(format_bytes(1 << 30), "1Gi");
        assert_eq!(format_bytes(8 << 40), "8Ti");
    }

    #[test]
    fn bytes_are_truncated_to_one_decimal_otherwise() {
        assert_eq!(format_bytes(4_000_000_000), "3.7Gi");
        assert_eq!(format_bytes((1 << 30) - 1), "1023.9Mi");
        assert_eq!(format_bytes(1500), "1.4Ki");
        assert_eq!(format_bytes(u64::MAX), "15.9Ei");
    }
}
