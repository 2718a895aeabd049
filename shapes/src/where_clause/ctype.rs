//! Case mapping (`lower`, `upper`, `ILIKE`) as the database's own ctype does it.
//!
//! Postgres maps case by the database's ctype, so `upper('é')` is `'é'` on a `C` database,
//! `'É'` on a `C.UTF-8` one, and `upper('ß')` is `'SS'` under ICU but `'ß'` under libc. The
//! live path must give the answer the snapshot's SQL gives, so the proxy reads the ctype when
//! it starts ([`Ctype::from_database`], fed by one query over every code point) and every
//! `where` parsed afterwards carries it ([`set_database_ctype`]).
//!
//! Which ctypes are reproduced, and how:
//! - `C`/`POSIX` (any provider): ASCII letters only.
//! - libc UTF-8 locales (and the PG17 builtin `C.UTF-8`): each character is mapped on its own
//!   (`towlower`/`towupper`), so the table of every character the database maps *is* the
//!   mapping.
//! - ICU with a locale whose language has no special casing rules: full Unicode mapping,
//!   context included (`ß` → `SS`, final sigma), as Rust's `str::to_lowercase` implements it,
//!   corrected character by character wherever the database's ICU (an older or newer Unicode
//!   version) maps a single character differently.
//! - Anything else (Turkish, Azeri, Lithuanian, Greek or Armenian ICU locales, a non-UTF-8
//!   database with a non-C ctype, an unknown provider) is [`Ctype::Unsupported`]: a `where`
//!   using `lower`, `upper` or `ILIKE` is refused with the reason.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

/// How the database maps case.
#[derive(Clone, PartialEq, Eq)]
pub enum Ctype {
    /// `C`/`POSIX`: ASCII letters only.
    Ascii,
    /// One character at a time, by a table (characters not in it map to themselves).
    Simple {
        lower: HashMap<char, char>,
        upper: HashMap<char, char>,
    },
    /// Full, context-sensitive Unicode mapping, with the characters the database maps
    /// differently from Rust's Unicode tables.
    Full {
        lower: HashMap<char, String>,
        upper: HashMap<char, String>,
    },
    /// A ctype the proxy cannot reproduce exactly: why, for the error message.
    Unsupported(String),
}

impl fmt::Debug for Ctype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ctype::Ascii => f.write_str("Ascii"),
            Ctype::Simple { lower, upper } => {
                write!(f, "Simple({} lower, {} upper)", lower.len(), upper.len())
            }
            Ctype::Full { lower, upper } => write!(
                f,
                "Full({} lower, {} upper overrides)",
                lower.len(),
                upper.len()
            ),
            Ctype::Unsupported(why) => write!(f, "Unsupported({why:?})"),
        }
    }
}

/// What `pg_database` says about the current database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseLocale {
    /// `pg_encoding_to_char(encoding)`, e.g. `UTF8`.
    pub encoding: String,
    /// `datlocprovider`: `c` (libc), `i` (ICU), `b` (builtin, PG17+).
    pub provider: String,
    /// `datctype`.
    pub ctype: String,
    /// `daticulocale` (PG15–16) or `datlocale` (PG17+), when set.
    pub locale: Option<String>,
}

/// One character the database maps: `lower(chr(c))` and `upper(chr(c))` as it answers them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharCase {
    pub ch: char,
    pub lower: String,
    pub upper: String,
}

/// Highest code point whose case the proxy reads from the database. No Unicode version maps
/// case above plane 1 (planes 2–3 are ideographs, 14 tags, 15–16 private use), and reading
/// 128 Ki code points instead of 1.1 Mi keeps the start-up query at a fifth of a second.
pub const HIGHEST_CASED_CODE_POINT: u32 = 0x1_FFFF;

/// The query that lists every character the database maps (run it in the database itself).
pub const CHAR_CASE_QUERY: &str = "SELECT cp::int4, lower(chr(cp)), upper(chr(cp)) \
     FROM generate_series(1, 131071) AS cp \
     WHERE cp NOT BETWEEN 55296 AND 57343 \
       AND (lower(chr(cp)) <> chr(cp) OR upper(chr(cp)) <> chr(cp))";

/// ICU languages with language-specific case rules (dotted/dotless i, Lithuanian dot above,
/// Greek accents dropped in upper case, the Armenian ech-yiwn ligature) that the proxy does
/// not reproduce.
const ICU_SPECIAL_LANGUAGES: &[&str] = &["tr", "az", "lt", "el", "hy"];

fn is_c_locale(name: &str) -> bool {
    matches!(name, "C" | "POSIX")
}

impl Ctype {
    /// The ctype of a database, from `pg_database` and the characters it maps
    /// ([`CHAR_CASE_QUERY`]).
    ///
    /// ```
    /// use shapes::where_clause::ctype::{CharCase, Ctype, DatabaseLocale};
    /// let libc = DatabaseLocale {
    ///     encoding: "UTF8".into(), provider: "c".into(), ctype: "C.UTF-8".into(), locale: None,
    /// };
    /// let chars = [CharCase { ch: 'É', lower: "é".into(), upper: "É".into() }];
    /// let ctype = Ctype::from_database(&libc, &chars);
    /// assert_eq!(ctype.lower("CAFÉ"), "CAFé");
    /// ```
    pub fn from_database(db: &DatabaseLocale, chars: &[CharCase]) -> Ctype {
        let utf8 = db.encoding == "UTF8";
        let locale = db.locale.as_deref().unwrap_or("");
        match db.provider.as_str() {
            "c" if is_c_locale(&db.ctype) => Ctype::Ascii,
            "b" if is_c_locale(locale) => Ctype::Ascii,
            _ if !utf8 => Ctype::Unsupported(format!(
                "the database's encoding is {} with ctype {:?}; only C ctypes or UTF-8 databases \
                 are supported",
                db.encoding, db.ctype
            )),
            "c" => simple(chars, &format!("libc ctype {:?}", db.ctype)),
            "b" if locale == "C.UTF-8" => simple(chars, "builtin locale C.UTF-8"),
            "b" if locale == "PG_UNICODE_FAST" => full(chars),
            "i" => {
                let language = locale
                    .split(['-', '_', '@'])
                    .next()
                    .unwrap_or("")
                    .to_ascii_lowercase();
                if ICU_SPECIAL_LANGUAGES.contains(&language.as_str()) {
                    Ctype::Unsupported(format!(
                        "the database's ICU locale {locale:?} has language-specific case rules"
                    ))
                } else {
                    full(chars)
                }
            }
            other => Ctype::Unsupported(format!(
                "the database's locale provider {other:?} (locale {locale:?}) is not known"
            )),
        }
    }

    /// Why `lower`, `upper` and `ILIKE` cannot be used, when they cannot.
    pub fn unsupported(&self) -> Option<&str> {
        match self {
            Ctype::Unsupported(why) => Some(why),
            _ => None,
        }
    }

    /// `lower(s)` as the database computes it.
    pub fn lower<'a>(&self, s: &'a str) -> Cow<'a, str> {
        self.map(s, true)
    }

    /// `upper(s)` as the database computes it.
    pub fn upper<'a>(&self, s: &'a str) -> Cow<'a, str> {
        self.map(s, false)
    }

    fn map<'a>(&self, s: &'a str, lower: bool) -> Cow<'a, str> {
        match self {
            // refused when the `where` is checked; ASCII keeps evaluation total
            Ctype::Ascii | Ctype::Unsupported(_) => {
                if lower {
                    Cow::Owned(s.to_ascii_lowercase())
                } else {
                    Cow::Owned(s.to_ascii_uppercase())
                }
            }
            Ctype::Simple { lower: l, upper: u } => {
                let table = if lower { l } else { u };
                Cow::Owned(s.chars().map(|c| *table.get(&c).unwrap_or(&c)).collect())
            }
            Ctype::Full { lower: l, upper: u } => {
                Cow::Owned(full_map(s, if lower { l } else { u }, lower))
            }
        }
    }
}

fn simple(chars: &[CharCase], what: &str) -> Ctype {
    let mut lower = HashMap::new();
    let mut upper = HashMap::new();
    for c in chars {
        let one = |s: &str| {
            let mut it = s.chars();
            match (it.next(), it.next()) {
                (Some(x), None) => Some(x),
                _ => None,
            }
        };
        match (one(&c.lower), one(&c.upper)) {
            (Some(l), Some(u)) => {
                if l != c.ch {
                    lower.insert(c.ch, l);
                }
                if u != c.ch {
                    upper.insert(c.ch, u);
                }
            }
            _ => {
                return Ctype::Unsupported(format!(
                    "the {what} maps U+{:04X} to more than one character",
                    c.ch as u32
                ));
            }
        }
    }
    Ctype::Simple { lower, upper }
}

/// Full mapping: Rust's, except for the characters the database maps differently.
fn full(chars: &[CharCase]) -> Ctype {
    let db: HashMap<char, &CharCase> = chars.iter().map(|c| (c.ch, c)).collect();
    let mut lower = HashMap::new();
    let mut upper = HashMap::new();
    for cp in 1..=HIGHEST_CASED_CODE_POINT {
        let Some(ch) = char::from_u32(cp) else {
            continue;
        };
        let ours_lower: String = ch.to_lowercase().collect();
        let ours_upper: String = ch.to_uppercase().collect();
        let (theirs_lower, theirs_upper) = match db.get(&ch) {
            Some(c) => (c.lower.clone(), c.upper.clone()),
            None => (ch.to_string(), ch.to_string()),
        };
        if ours_lower != theirs_lower {
            lower.insert(ch, theirs_lower);
        }
        if ours_upper != theirs_upper {
            upper.insert(ch, theirs_upper);
        }
    }
    Ctype::Full { lower, upper }
}

/// Maps `s` with Rust's full mapping between the overridden characters. An overridden
/// character is one the database's Unicode does not case (or cases otherwise); treating it
/// as a boundary is what ICU does for the final-sigma context too, since an unassigned
/// character is neither cased nor case-ignorable.
fn full_map(s: &str, overrides: &HashMap<char, String>, lower: bool) -> String {
    let whole = |part: &str| {
        if lower {
            part.to_lowercase()
        } else {
            part.to_uppercase()
        }
    };
    if overrides.is_empty() || !s.chars().any(|c| overrides.contains_key(&c)) {
        return whole(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if let Some(mapped) = overrides.get(&c) {
            out.push_str(&whole(&s[start..i]));
            out.push_str(mapped);
            start = i + c.len_utf8();
        }
    }
    out.push_str(&whole(&s[start..]));
    out
}

static DATABASE_CTYPE: RwLock<Option<Arc<Ctype>>> = RwLock::new(None);

/// Sets the ctype every `where` parsed from now on uses (the proxy calls it once at start:
/// one proxy serves one database). Clauses already parsed keep the one they were parsed with.
pub fn set_database_ctype(ctype: Arc<Ctype>) {
    let mut slot = DATABASE_CTYPE
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *slot = Some(ctype);
}

/// The ctype set by [`set_database_ctype`]; `C` (ASCII) until one is set.
pub fn database_ctype() -> Arc<Ctype> {
    let slot = DATABASE_CTYPE
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    slot.clone().unwrap_or_else(|| Arc::new(Ctype::Ascii))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn icu(chars: &[CharCase]) -> Ctype {
        Ctype::from_database(
            &DatabaseLocale {
                encoding: "UTF8".into(),
                provider: "i".into(),
                ctype: "C.UTF-8".into(),
                locale: Some("und".into()),
            },
            chars,
        )
    }

    /// What a database whose ICU agrees with Rust's Unicode tables answers, but for `except`.
    fn agreeing_table(except: char) -> Vec<CharCase> {
        (1..=HIGHEST_CASED_CODE_POINT)
            .filter_map(char::from_u32)
            .filter(|&ch| ch != except)
            .map(|ch| CharCase {
                ch,
                lower: ch.to_lowercase().collect(),
                upper: ch.to_uppercase().collect(),
            })
            .filter(|c| c.lower != c.ch.to_string() || c.upper != c.ch.to_string())
            .collect()
    }

    #[test]
    fn full_mapping_expands_and_handles_final_sigma() {
        let ctype = icu(&agreeing_table('\0'));
        assert_eq!(
            ctype,
            Ctype::Full {
                lower: HashMap::new(),
                upper: HashMap::new()
            }
        );
        assert_eq!(ctype.upper("straße"), "STRASSE");
        assert_eq!(ctype.lower("ΑΣ ΑΣΑ"), "ας ασα");
    }

    #[test]
    fn an_override_is_used_and_splits_the_context() {
        // the database does not case 'Ǆ' at all (as if its Unicode were older)
        let ctype = icu(&agreeing_table('Ǆ'));
        let Ctype::Full { lower, .. } = &ctype else {
            panic!("{ctype:?}");
        };
        assert_eq!(lower.get(&'Ǆ').map(String::as_str), Some("Ǆ"));
        assert_eq!(ctype.lower("AǄB"), "aǄb");
    }

    #[test]
    fn turkish_icu_and_non_utf8_libc_are_refused() {
        let tr = Ctype::from_database(
            &DatabaseLocale {
                encoding: "UTF8".into(),
                provider: "i".into(),
                ctype: "C".into(),
                locale: Some("tr-TR".into()),
            },
            &[],
        );
        assert!(tr.unsupported().unwrap().contains("\"tr-TR\""), "{tr:?}");
        let latin1 = Ctype::from_database(
            &DatabaseLocale {
                encoding: "LATIN1".into(),
                provider: "c".into(),
                ctype: "de_DE".into(),
                locale: None,
            },
            &[],
        );
        assert!(latin1.unsupported().is_some());
        let c = Ctype::from_database(
            &DatabaseLocale {
                encoding: "SQL_ASCII".into(),
                provider: "c".into(),
                ctype: "C".into(),
                locale: None,
            },
            &[],
        );
        assert_eq!(c, Ctype::Ascii);
        assert_eq!(c.upper("é"), "é");
    }
}
