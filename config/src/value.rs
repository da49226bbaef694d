//! Reading typed values out of untrusted JSON: integers that may arrive as
//! fraction-less floats, and short descriptions of a wrong value for problem messages.

use serde_json::Value;

/// Longest string value quoted back in a problem message; longer ones are cut so
/// that a hostile payload cannot flood the log through an error text.
const MAX_QUOTED_CHARS: usize = 40;

/// The value as an integer, if it is one: a JSON integer, or a finite float with no
/// fractional part (`30.0`), since some JSON producers write every number as a float.
/// Strings, booleans and fractional numbers are not integers.
pub(crate) fn integer(v: &Value) -> Option<i128> {
    let n = v.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i128::from(i));
    }
    if let Some(u) = n.as_u64() {
        return Some(i128::from(u));
    }
    let f = n.as_f64()?;
    // 1e30 is far beyond every range this crate accepts, and keeps the cast exact.
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e30 {
        // The guard above makes this cast lossless: f is integral and well inside i128.
        #[allow(clippy::cast_possible_truncation)]
        return Some(f as i128);
    }
    None
}

/// A short description of a value for "got …" in problem messages:
/// numbers, booleans and null verbatim, strings quoted (cut to a few dozen
/// characters), arrays and objects by kind only.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            let mut cut: String = s.chars().take(MAX_QUOTED_CHARS).collect();
            if cut.len() < s.len() {
                cut.push('…');
            }
            format!("string {cut:?}")
        }
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers() {
        assert_eq!(integer(&json!(30)), Some(30));
        assert_eq!(integer(&json!(-1)), Some(-1));
        assert_eq!(integer(&json!(u64::MAX)), Some(i128::from(u64::MAX)));
        assert_eq!(integer(&json!(30.0)), Some(30));
        assert_eq!(integer(&json!(30.5)), None);
        assert_eq!(integer(&json!(1e300)), None);
        assert_eq!(integer(&json!("30")), None);
        assert_eq!(integer(&json!(true)), None);
        assert_eq!(integer(&Value::Null), None);
    }

    #[test]
    fn descriptions() {
        assert_eq!(describe(&json!(0)), "0");
        assert_eq!(describe(&json!("abc")), "string \"abc\"");
        assert_eq!(describe(&json!([1])), "an array");
        let long = "x".repeat(100);
        let d = describe(&json!(long));
        assert!(d.len() < 60, "{d}");
        assert!(d.ends_with("…\""), "{d}");
    }
}
