//! Resource quantities in Kubernetes syntax: `100m`, `0.5`, `2`, `64Mi`, `1G`, `1Gi`, `512k`,
//! `1e3`. CPU is counted in millicores, memory and disk in bytes. Fractions of the target unit
//! are rounded up, as Kubernetes does.

use thiserror::Error;

/// Why a quantity could not be read. The display names the value, so callers only add the field.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    #[error("invalid quantity {0:?}: expected a number with an optional suffix like 100m, 0.5, 64Mi or 1G")]
    Syntax(String),
    #[error("invalid quantity {0:?}: unknown suffix {1:?} (use m, k, M, G, T, P, E or Ki, Mi, Gi, Ti, Pi, Ei)")]
    Suffix(String, String),
    #[error("invalid quantity {0:?}: must not be negative")]
    Negative(String),
    #[error("invalid quantity {0:?}: too large")]
    TooLarge(String),
    #[error("invalid quantity {0:?}: the suffix m means thousandths, so this is less than a byte; did you mean {1}?")]
    MilliBytes(String, String),
}

/// One of the readers below, chosen per resource.
pub type Reader = fn(&str) -> Result<u64, QuantityError>;

/// CPU in thousandths of a core: `100m` -> 100, `0.5` -> 500, `2` -> 2000.
pub fn cpu_millis(s: &str) -> Result<u64, QuantityError> {
    parse(s)?.scaled(1000, 1, s)
}

/// Memory or disk in bytes: `64Mi` -> 67108864, `1G` -> 1000000000, `512k` -> 512000.
pub fn bytes(s: &str) -> Result<u64, QuantityError> {
    let q = parse(s)?;
    if q.suffix == "m" {
        let hint = format!("{}Mi", s.trim().trim_end_matches('m'));
        return Err(QuantityError::MilliBytes(s.to_string(), hint));
    }
    q.scaled(1, 1, s)
}

/// A plain number of mebibytes (Marathon's `mem` and `disk`) in bytes: `128` -> 134217728.
pub fn mebibytes(s: &str) -> Result<u64, QuantityError> {
    let q = parse(s)?;
    if !q.suffix.is_empty() {
        return Err(QuantityError::Syntax(s.to_string()));
    }
    q.scaled(1 << 20, 1, s)
}

/// `mantissa * 10^exp10 * 2^exp2`, exactly.
#[derive(Debug, PartialEq, Eq)]
struct Quantity<'a> {
    mantissa: u128,
    exp10: i32,
    exp2: u32,
    suffix: &'a str,
}

/// Digits beyond this are rejected rather than risking overflow; no real quantity has as many.
const MAX_DIGITS: usize = 30;
/// Decimal exponents beyond this are out of any useful range.
const MAX_EXP10: i32 = 30;

fn parse(s: &str) -> Result<Quantity<'_>, QuantityError> {
    let syntax = || QuantityError::Syntax(s.to_string());
    let t = s.trim();
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let number_end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, suffix) = t.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(syntax());
    }
    if whole.len() + fraction.len() > MAX_DIGITS {
        return Err(QuantityError::TooLarge(s.to_string()));
    }
    let mut mantissa: u128 = 0;
    for c in whole.bytes().chain(fraction.bytes()) {
        if !c.is_ascii_digit() {
            return Err(syntax());
        }
        mantissa = mantissa * 10 + u128::from(c - b'0');
    }
    if negative && mantissa != 0 {
        return Err(QuantityError::Negative(s.to_string()));
    }
    // MAX_DIGITS keeps this small.
    let fraction_digits = fraction.len() as i32;
    let (exp10, exp2) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => match suffix.strip_prefix(['e', 'E']) {
            Some(exponent) => match exponent.parse::<i32>() {
                Ok(e) if e.abs() <= MAX_EXP10 => (e, 0),
                Ok(_) => return Err(QuantityError::TooLarge(s.to_string())),
                Err(_) => return Err(syntax()),
            },
            None if suffix
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic()) =>
            {
                return Err(QuantityError::Suffix(s.to_string(), suffix.to_string()))
            }
            None => return Err(syntax()),
        },
    };
    Ok(Quantity {
        mantissa,
        exp10: exp10 - fraction_digits,
        exp2,
        suffix,
    })
}

impl Quantity<'_> {
    /// The quantity times `num / den`, rounded up, as a u64.
    fn scaled(&self, num: u128, den: u128, original: &str) -> Result<u64, QuantityError> {
        let too_large = || QuantityError::TooLarge(original.to_string());
        let mut value = self
            .mantissa
            .checked_mul(num)
            .and_then(|v| v.checked_mul(1u128 << self.exp2))
            .ok_or_else(too_large)?;
        let mut divisor = den;
        if self.exp10 >= 0 {
            let factor = 10u128
                .checked_pow(self.exp10.unsigned_abs())
                .ok_or_else(too_large)?;
            value = value.checked_mul(factor).ok_or_else(too_large)?;
        } else {
            let factor = 10u128
                .checked_pow(self.exp10.unsigned_abs())
                .ok_or_else(too_large)?;
            divisor = divisor.checked_mul(factor).ok_or_else(too_large)?;
        }
        u64::try_from(value.div_ceil(divisor)).map_err(|_| too_large())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_in_millicores() {
        assert_eq!(cpu_millis("100m"), Ok(100));
        assert_eq!(cpu_millis("0.5"), Ok(500));
        assert_eq!(cpu_millis("2"), Ok(2000));
        assert_eq!(cpu_millis("1.5"), Ok(1500));
        assert_eq!(cpu_millis(".25"), Ok(250));
        assert_eq!(cpu_millis("0.1"), Ok(100));
        assert_eq!(cpu_millis("1e-3"), Ok(1));
        assert_eq!(cpu_millis("0"), Ok(0));
        // Kubernetes rounds sub-millicore requests up.
        assert_eq!(cpu_millis("0.0001"), Ok(1));
    }

    #[test]
    fn memory_in_bytes() {
        assert_eq!(bytes("64Mi"), Ok(64 << 20));
        assert_eq!(bytes("1G"), Ok(1_000_000_000));
        assert_eq!(bytes("1Gi"), Ok(1 << 30));
        assert_eq!(bytes("512k"), Ok(512_000));
        assert_eq!(bytes("1024"), Ok(1024));
        assert_eq!(bytes("0.5Ki"), Ok(512));
        assert_eq!(bytes("129e6"), Ok(129_000_000));
        assert_eq!(bytes("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(bytes(" 2Ti "), Ok(2 << 40));
    }

    #[test]
    fn marathon_mebibytes() {
        assert_eq!(mebibytes("128"), Ok(128 << 20));
        assert_eq!(mebibytes("0.5"), Ok(512 << 10));
        assert_eq!(mebibytes("0"), Ok(0));
        assert!(mebibytes("128Mi").is_err());
    }

    #[test]
    fn errors_name_the_value_and_say_what_to_write() {
        assert_eq!(
            bytes("12q").unwrap_err().to_string(),
            "invalid quantity \"12q\": unknown suffix \"q\" (use m, k, M, G, T, P, E or Ki, Mi, Gi, Ti, Pi, Ei)"
        );
        assert_eq!(
            cpu_millis("-1").unwrap_err().to_string(),
            "invalid quantity \"-1\": must not be negative"
        );
        assert_eq!(
            bytes("100m").unwrap_err().to_string(),
            "invalid quantity \"100m\": the suffix m means thousandths, so this is less than a byte; did you mean 100Mi?"
        );
        assert_eq!(
            cpu_millis("lots").unwrap_err().to_string(),
            "invalid quantity \"lots\": expected a number with an optional suffix like 100m, 0.5, 64Mi or 1G"
        );
        for bad in [
            "", "m", ".", "1.2.3", "1 Gi", "1e", "1eX", "0x10", "Mi64", "1Mib", "--1",
        ] {
            assert!(bytes(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(matches!(bytes("1e40"), Err(QuantityError::TooLarge(_))));
        assert!(matches!(bytes("100E"), Err(QuantityError::TooLarge(_))));
        assert!(matches!(
            bytes("1234567890123456789012345678901"),
            Err(QuantityError::TooLarge(_))
        ));
    }
}
