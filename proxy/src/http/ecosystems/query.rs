//! Query strings of the sync protocols: each parameter at most once, none unknown.

use std::collections::HashMap;

use crate::http::error::ApiError;

/// Parameters every endpoint accepts: the credentials (`http::credentials`).
const CREDENTIALS: [&str; 3] = ["secret", "api_secret", "token"];

/// The parameters of `query`; 400 for a repeated parameter or one not in `known`.
pub fn parse(query: &str, known: &[&str]) -> Result<HashMap<String, String>, ApiError> {
    let mut params = HashMap::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if CREDENTIALS.contains(&key.as_ref()) {
            continue;
        }
        if !known.contains(&key.as_ref()) {
            return Err(ApiError::invalid(
                key.into_owned(),
                format!(
                    "unknown parameter; this endpoint takes {}",
                    known.join(", ")
                ),
            ));
        }
        if params
            .insert(key.clone().into_owned(), value.into_owned())
            .is_some()
        {
            return Err(ApiError::invalid(
                key.into_owned(),
                "given more than once; send it once",
            ));
        }
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_and_unknown_parameters_are_named() {
        let known = ["limit", "checkpoint"];
        let params = parse("limit=5&token=x&checkpoint=%7B%7D", &known).unwrap();
        assert_eq!(params["checkpoint"], "{}");
        assert_eq!(params.len(), 2);
        let ApiError::Invalid(errors) = parse("limit=5&limit=6", &known).unwrap_err() else {
            panic!("not a 400");
        };
        assert_eq!(errors["limit"], vec!["given more than once; send it once"]);
        let ApiError::Invalid(errors) = parse("limt=5", &known).unwrap_err() else {
            panic!("not a 400");
        };
        assert!(errors.contains_key("limt"));
    }
}
