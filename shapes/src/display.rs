//! The session settings under which shapesync has Postgres write values as text.
//!
//! Every value shapesync serves is a type's text output: rows from pgoutput (formatted with
//! the walsender's session settings), snapshot rows, rows a write returns, and the keys the
//! write path and its purge job compare. The same row must read the same from each of them,
//! and the `where` evaluator here reads those texts (dates and times in ISO form, floats with
//! round-trip precision, `bytea` as hex). So every connection that reads values sets exactly
//! these, spelled once, here: as startup options ([`STARTUP_OPTIONS`], for the replication
//! and snapshot connections) or as `SET` statements ([`SET_STATEMENTS`], for pooled
//! connections).

/// Defines the settings once and spells both forms from the same list. Values hold no
/// whitespace, so the startup form needs no escaping.
macro_rules! display_settings {
    ($first:literal = $first_value:literal $(, $name:literal = $value:literal)* $(,)?) => {
        /// `(name, value)` of each setting.
        pub const DISPLAY_SETTINGS: &[(&str, &str)] =
            &[($first, $first_value) $(, ($name, $value))*];
        /// The settings as the `options` startup parameter: `-c name=value …`.
        pub const STARTUP_OPTIONS: &str =
            concat!("-c ", $first, "=", $first_value $(, " -c ", $name, "=", $value)*);
        /// The settings as `SET` statements, for a simple-query batch.
        pub const SET_STATEMENTS: &str =
            concat!("SET ", $first, " = '", $first_value, "'" $(, "; SET ", $name, " = '", $value, "'")*);
    };
}

display_settings!(
    "DateStyle" = "ISO,DMY",
    "TimeZone" = "UTC",
    "IntervalStyle" = "iso_8601",
    "extra_float_digits" = "1",
    "bytea_output" = "hex",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_carry_every_setting() {
        assert_eq!(
            STARTUP_OPTIONS,
            "-c DateStyle=ISO,DMY -c TimeZone=UTC -c IntervalStyle=iso_8601 \
             -c extra_float_digits=1 -c bytea_output=hex"
        );
        assert_eq!(
            SET_STATEMENTS,
            "SET DateStyle = 'ISO,DMY'; SET TimeZone = 'UTC'; SET IntervalStyle = 'iso_8601'; \
             SET extra_float_digits = '1'; SET bytea_output = 'hex'"
        );
        assert!(
            DISPLAY_SETTINGS
                .iter()
                .all(|(_, value)| !value.contains(char::is_whitespace)),
            "a space would need escaping in the startup form"
        );
    }
}
