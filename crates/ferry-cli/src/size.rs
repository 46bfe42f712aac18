//! Human sizes and durations, on the command line and in the config file: `16MiB`, `64k`,
//! `10s`, `500ms`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Parses a byte size: a number with an optional unit (`k`/`KiB` = 1024, `M`/`MiB`, `G`/`GiB`;
/// `KB`, `MB`, `GB` are powers of 1000).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size; try 1048576, 64KiB or 16MiB"))?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(format!("unknown size unit {unit:?}; use KiB, MiB or GiB")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses a duration: a number with `ms`, `s` (the default), `m` or `h`. Whole numbers are
/// exact; a fraction is rounded to the millisecond, the unit durations are printed in, so what
/// `--print-config` shows reads back as the same duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let millis_per_unit: u64 = match unit.trim() {
        "" | "s" => 1000,
        "ms" => 1,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("unknown duration unit {unit:?}; use ms, s, m or h")),
    };
    let out_of_range = || format!("{text:?} is out of range");
    let not_a_duration = || format!("{text:?} is not a duration; try 10s or 500ms");
    // Whole numbers that fit take the exact path; a fraction, or too many digits, goes through
    // f64 (rounded to the millisecond, or out of range).
    if let Ok(whole) = number.parse::<u64>() {
        return match millis_per_unit {
            1000 => Ok(Duration::from_secs(whole)),
            1 => Ok(Duration::from_millis(whole)),
            _ => whole
                .checked_mul(millis_per_unit / 1000)
                .map(Duration::from_secs)
                .ok_or_else(out_of_range),
        };
    }
    let number: f64 = number.parse().map_err(|_| not_a_duration())?;
    let millis = (number * millis_per_unit as f64).round();
    if !(0.0..=u64::MAX as f64).contains(&millis) {
        return Err(out_of_range());
    }
    Ok(Duration::from_millis(millis as u64))
}

/// A byte size in the config: `1048576`, `"64KiB"` or `"16MiB"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub usize);

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = self.0;
        let text = if n != 0 && n.is_multiple_of(1 << 30) {
            format!("{}GiB", n >> 30)
        } else if n != 0 && n.is_multiple_of(1 << 20) {
            format!("{}MiB", n >> 20)
        } else if n != 0 && n.is_multiple_of(1 << 10) {
            format!("{}KiB", n >> 10)
        } else {
            n.to_string()
        };
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumberOrText::deserialize(d)? {
            NumberOrText::Number(n) => usize::try_from(n).map_err(|_| "too large".to_owned()),
            NumberOrText::Text(text) => parse_size(&text),
        }
        .map(Size)
        .map_err(serde::de::Error::custom)
    }
}

/// How a size or a duration may be written: a bare number, or a string with a unit.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

/// A duration in the config: `10` (seconds), `"10s"`, `"500ms"`, `"5m"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let d = self.0;
        let text = if d.subsec_nanos() == 0 {
            format!("{}s", d.as_secs())
        } else {
            format!("{}ms", d.as_millis())
        };
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumberOrText::deserialize(d)? {
            NumberOrText::Number(n) => Ok(Duration::from_secs(n)),
            NumberOrText::Text(text) => parse_duration(&text),
        }
        .map(Dur)
        .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("lots").unwrap_err().contains("16MiB"));
        assert!(parse_size("5 parsecs").is_err());
    }

    /// Found by the config_file fuzz target: `idle_timeout = 3333333333333333333` printed as
    /// seconds and read back through f64, a different number. What is printed must read back
    /// as itself.
    #[test]
    fn printed_durations_read_back_the_same() {
        for text in [
            "3333333333333333333",
            "\"0.0006s\"",
            "\"1.25m\"",
            "\"18446744073709551615ms\"",
        ] {
            let first: Dur = toml::from_str::<toml::Value>(&format!("d = {text}"))
                .ok()
                .and_then(|v| v.get("d").cloned())
                .map(|v| v.try_into().unwrap())
                .unwrap();
            let printed =
                toml::to_string(&std::collections::BTreeMap::from([("d", first)])).unwrap();
            let again: std::collections::BTreeMap<String, Dur> = toml::from_str(&printed).unwrap();
            assert_eq!(again["d"], first, "{text} printed as {printed}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        // Whole numbers are exact however large; fractions round to the millisecond.
        assert_eq!(
            parse_duration("3333333333333333333s"),
            Ok(Duration::from_secs(3_333_333_333_333_333_333))
        );
        assert_eq!(parse_duration("0.0004s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0.0006s"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("18446744073709551615h").is_err());
        // Digits and a point make the number: an exponent is not one.
        assert!(
            parse_duration("1e400s")
                .unwrap_err()
                .contains("unknown duration unit")
        );
        // Too many digits for a u64 is a number out of range, not a malformed one.
        assert!(
            parse_duration("99999999999999999999999s")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(parse_duration("soon").is_err());
    }
}
