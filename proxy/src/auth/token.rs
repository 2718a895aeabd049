//! JWT bearer tokens: HS256 with a shared key (`--jwt-secret`), RS256 or ES256 with a public
//! key file (`--jwt-public-key`).
//!
//! The algorithm a token names picks the key among the configured ones, never the other way
//! round: an HS256 token is checked with the shared key only (so a token "signed" with the
//! public key as an HMAC key fails), `none` and every other algorithm are refused. `exp` is
//! required and exact: a token is refused from its `exp` on, as live responses made with it
//! end then (the client must come back with a fresh token, and one that is still accepted
//! would open another). `nbf` (with [`LEEWAY_SECS`]), and `iss`/`aud` when configured (then
//! required too), are checked.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::claims::Claims;

/// Clock skew allowed when checking `nbf`, in seconds (an issuer's clock a little ahead).
pub const LEEWAY_SECS: u64 = 30;

/// How tokens are verified.
pub struct TokenVerifier {
    shared: Option<DecodingKey>,
    public: Option<(DecodingKey, Algorithm)>,
    issuer: Option<String>,
    audience: Option<String>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithms", &self.accepted())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading the JWT public key {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the JWT public key {path} is neither an RSA nor an EC public key in PEM form \
         (-----BEGIN PUBLIC KEY-----)"
    )]
    Unusable { path: String },
    #[error("--jwt-secret is empty")]
    EmptySecret,
}

impl TokenVerifier {
    /// A verifier for the configured keys (at least one of them).
    pub fn new(
        shared_secret: Option<&str>,
        public_key: Option<&Path>,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Result<Self, KeyError> {
        let shared = match shared_secret {
            Some("") => return Err(KeyError::EmptySecret),
            Some(secret) => Some(DecodingKey::from_secret(secret.as_bytes())),
            None => None,
        };
        let public = match public_key {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| KeyError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                let key = DecodingKey::from_rsa_pem(&pem)
                    .map(|k| (k, Algorithm::RS256))
                    .or_else(|_| DecodingKey::from_ec_pem(&pem).map(|k| (k, Algorithm::ES256)))
                    .map_err(|_| KeyError::Unusable {
                        path: path.display().to_string(),
                    })?;
                Some(key)
            }
        };
        Ok(Self {
            shared,
            public,
            issuer,
            audience,
        })
    }

    /// The algorithms accepted, for messages.
    pub fn accepted(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.shared.is_some() {
            names.push("HS256");
        }
        match self.public.as_ref().map(|(_, alg)| alg) {
            Some(Algorithm::RS256) => names.push("RS256"),
            Some(_) => names.push("ES256"),
            None => {}
        }
        names
    }

    fn public_for(&self, algorithm: Algorithm) -> Option<(&DecodingKey, Algorithm)> {
        self.public
            .as_ref()
            .filter(|(_, a)| *a == algorithm)
            .map(|(k, a)| (k, *a))
    }

    /// The claims of a valid token, or why it is refused (the message for a 401).
    pub fn verify(&self, token: &str) -> Result<Claims, String> {
        let alg = header_algorithm(token)?;
        let (key, algorithm) = match alg.as_str() {
            "HS256" => self.shared.as_ref().map(|k| (k, Algorithm::HS256)),
            "RS256" => self.public_for(Algorithm::RS256),
            "ES256" => self.public_for(Algorithm::ES256),
            _ => None,
        }
        .ok_or_else(|| {
            format!(
                "tokens signed with {alg} are not accepted (accepted: {})",
                self.accepted().join(", ")
            )
        })?;
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
            required.push("iss");
        }
        match &self.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => "the token has expired",
                    ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)",
                    ErrorKind::InvalidIssuer => "the token's issuer (iss) is not accepted",
                    ErrorKind::InvalidAudience => "the token's audience (aud) is not accepted",
                    ErrorKind::InvalidSignature => "the token's signature is not valid",
                    ErrorKind::MissingRequiredClaim(claim) => {
                        return format!("the token has no {claim} claim, which is required");
                    }
                    ErrorKind::InvalidClaimFormat(claim) => {
                        return format!("the token's {claim} claim is malformed");
                    }
                    _ => "the token is malformed",
                }
                .to_owned()
            })?;
        // The decoder allows the leeway past `exp` too; a token is not used past it.
        match expiry(&claims) {
            Some(exp) if exp > SystemTime::now() => Ok(claims),
            Some(_) => Err("the token has expired".to_owned()),
            None => Err("the token's exp claim is malformed".to_owned()),
        }
    }
}

/// When a token with these claims stops being accepted: its `exp` (seconds since the Unix
/// epoch), `None` when it has none or one that is not a number of seconds.
pub fn expiry(claims: &Claims) -> Option<SystemTime> {
    let seconds = claims.get("exp")?.as_f64()?;
    let since_epoch = Duration::try_from_secs_f64(seconds).ok()?;
    UNIX_EPOCH.checked_add(since_epoch)
}

/// The `alg` of a token's header, read before anything is trusted (only to pick the key).
fn header_algorithm(token: &str) -> Result<String, String> {
    let malformed = || "the token is malformed: expected a JWT (header.payload.signature)";
    let header = token.split('.').next().ok_or_else(malformed)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| malformed())?;
    let header: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    header["alg"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| malformed().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use rstest::rstest;
    use serde_json::json;

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs(claims: serde_json::Value, key: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    }

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(
            Some("k"),
            None,
            Some("https://id.example".into()),
            Some("shapesync".into()),
        )
        .unwrap()
    }

    fn good() -> serde_json::Value {
        json!({"sub": "alice", "exp": now() + 600, "iss": "https://id.example", "aud": "shapesync"})
    }

    #[test]
    fn a_valid_token_gives_its_claims() {
        let claims = verifier().verify(&hs(good(), "k")).unwrap();
        assert_eq!(claims["sub"], "alice");
    }

    /// What a refusal says: exactly this, or a message containing this.
    enum Says {
        Exactly(&'static str),
        Part(&'static str),
    }

    #[rstest]
    #[case::expired(json!({"exp": now() - 600}), Says::Exactly("the token has expired"))]
    // No leeway past `exp`: live responses end there, so the token must not open more.
    #[case::expired_a_second_ago(json!({"exp": now() - 1}), Says::Exactly("the token has expired"))]
    #[case::expiring_now(json!({"exp": now()}), Says::Exactly("the token has expired"))]
    #[case::not_valid_yet(
        json!({"nbf": now() + 600}),
        Says::Exactly("the token is not valid yet (nbf)")
    )]
    #[case::other_issuer(json!({"iss": "https://evil.example"}), Says::Part("issuer"))]
    #[case::other_audience(json!({"aud": "other"}), Says::Part("audience"))]
    #[case::no_exp(json!({"exp": null}), Says::Part("no exp claim"))]
    #[case::no_iss(json!({"iss": null}), Says::Part("no iss claim"))]
    #[case::no_aud(json!({"aud": null}), Says::Part("no aud claim"))]
    fn each_refusal_says_why(#[case] patch: serde_json::Value, #[case] says: Says) {
        let mut claims = good();
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        let refusal = verifier().verify(&hs(claims, "k")).unwrap_err();
        match says {
            Says::Exactly(message) => assert_eq!(refusal, message),
            Says::Part(fragment) => assert!(refusal.contains(fragment), "{refusal}"),
        }
    }

    #[test]
    fn a_wrong_signature_is_refused() {
        assert!(
            verifier()
                .verify(&hs(good(), "wrong"))
                .unwrap_err()
                .contains("signature")
        );
    }

    #[test]
    fn alg_none_and_unconfigured_algorithms_are_refused() {
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let none = format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT"})),
            b64(good())
        );
        assert!(
            verifier()
                .verify(&none)
                .unwrap_err()
                .contains("signed with none are not accepted")
        );
        let rs = format!("{}.{}.x", b64(json!({"alg": "RS256"})), b64(good()));
        assert!(verifier().verify(&rs).unwrap_err().contains("RS256"));
        assert!(
            verifier()
                .verify("garbage")
                .unwrap_err()
                .contains("malformed")
        );
        let tampered = {
            let token = hs(good(), "k");
            let parts: Vec<&str> = token.split('.').collect();
            let mut claims = good();
            claims["sub"] = json!("bob");
            format!("{}.{}.{}", parts[0], b64(claims), parts[2])
        };
        assert!(
            verifier()
                .verify(&tampered)
                .unwrap_err()
                .contains("signature")
        );
    }
}
