//! STAND-IN until the `where` language lands (issue 3).

use crate::schema::QualifiedName;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TableNameError(pub String);

pub fn parse_table_name(text: &str) -> Result<QualifiedName, TableNameError> {
    let (schema, name) = match text.split_once('.') {
        Some((s, n)) => (s, n),
        None => ("public", text),
    };
    let unquote = |p: &str| {
        if p.len() >= 2 && p.starts_with('"') && p.ends_with('"') {
            p[1..p.len() - 1].replace("\"\"", "\"")
        } else {
            p.to_lowercase()
        }
    };
    if name.is_empty() {
        return Err(TableNameError("empty table name".into()));
    }
    Ok(QualifiedName::new(unquote(schema), unquote(name)))
}
