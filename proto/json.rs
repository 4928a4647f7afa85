//! JSON as the canonical proto3 JSON printers write it.
//!
//! pbjson's serde impls give the canonical field names and forms, but
//! serde_json prints every `f64` with a fraction (`1.0`), and a payload's
//! numbers (`google.protobuf.Value`) and fields such as `percent` are
//! doubles. The canonical printers (protojson, JavaScript's
//! `JSON.stringify`) print a whole number as an integer (`1`), and typed
//! decoders on the client (an `int` field) refuse `1.0`. So every JSON the
//! server's JSON doors (REST, SSE, WebSocket) send goes through [`to_string`] or [`to_vec`].

use std::io;

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter, Serializer};

/// `value` as compact JSON, whole doubles as integers.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(128);
    value.serialize(&mut Serializer::with_formatter(&mut out, Canonical))?;
    Ok(out)
}

/// [`to_vec`], as a string.
pub fn to_string<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let bytes = to_vec(value)?;
    // The serializer writes only UTF-8.
    String::from_utf8(bytes).map_err(|error| serde::ser::Error::custom(error.to_string()))
}

/// Below this magnitude (2^53) a whole double prints as a plain integer:
/// every such integer is exactly a double, so any reader gets the same
/// number back. Above it the default form (`1e+16`) keeps readers that parse
/// integer literals as 64-bit integers from refusing or rounding it.
const PLAIN_BELOW: f64 = 9_007_199_254_740_992.0;

/// serde_json's compact formatter, but a whole double prints as an integer.
struct Canonical;

impl Formatter for Canonical {
    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        if value.is_finite() && value.fract() == 0.0 && value.abs() < PLAIN_BELOW {
            // `{:.0}` prints every digit of a whole double (no exponent),
            // and keeps the sign of -0, as the proto JSON printers do.
            return write!(writer, "{value:.0}");
        }
        CompactFormatter.write_f64(writer, value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_doubles_print_as_integers_and_the_rest_as_before() {
        let values: [f64; 11] = [
            1.0,
            -7.0,
            0.0,
            -0.0,
            0.5,
            1e15,
            9_007_199_254_740_991.0,
            1e16,
            2.5e-8,
            1e21,
            123456789.125,
        ];
        let printed: Vec<String> = values.iter().map(|v| to_string(v).unwrap()).collect();
        assert_eq!(
            printed,
            [
                "1",
                "-7",
                "0",
                "-0",
                "0.5",
                "1000000000000000",
                "9007199254740991",
                "1e+16",
                "2.5e-8",
                "1e+21",
                "123456789.125"
            ]
        );
        // Every one reads back as the same double, sign of zero included.
        for (value, text) in values.iter().zip(&printed) {
            let read = serde_json::from_str::<f64>(text).unwrap();
            assert_eq!(read.to_bits(), value.to_bits(), "{text}");
        }
        assert_eq!(to_string(&f64::NAN).unwrap(), "null");
        assert_eq!(
            to_string(&serde_json::json!({"a": [1.0, "x"]})).unwrap(),
            r#"{"a":[1,"x"]}"#
        );
    }
}
