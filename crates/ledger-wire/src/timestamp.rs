//! The API's one timestamp format: RFC 3339 in UTC with microseconds and `Z`
//! (`2026-11-21T17:31:44.059873Z`), the precision PostgreSQL stores. The database
//! renders the same text (`ledger.ts_text`), so an answer reads the same whichever side
//! produced it. Any RFC 3339 timestamp is accepted when reading.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

pub fn format(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(at))
}

pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn always_six_fraction_digits_and_z() {
        let at = DateTime::parse_from_rfc3339("2026-11-21T17:31:44.05+00:00")
            .expect("valid")
            .with_timezone(&Utc);
        assert_eq!(format(&at), "2026-11-21T17:31:44.050000Z");
        let whole = DateTime::parse_from_rfc3339("2026-11-21T18:31:44+01:00")
            .expect("valid")
            .with_timezone(&Utc);
        assert_eq!(format(&whole), "2026-11-21T17:31:44.000000Z");
    }
}
