//! Keeping credentials out of what adapters echo: error messages scrubbed of every known
//! secret (through [`crate::redact`]) and shortened to one line.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::auth::RegistryAuthorization;
use super::wire;
use crate::redact::Redactor;

/// Longest adapter message kept in an error.
pub(super) const MAX_MESSAGE_CHARS: usize = 512;

/// The message of an `ErrorResponse`, or the body's text; every known secret replaced by
/// `***` in whatever form it takes ([`crate::redact::Redactor`], matched before whitespace is
/// collapsed), since adapters sometimes echo what they were sent; then cleaned and shortened.
pub(super) fn error_message(body: &[u8], secrets: &[String]) -> String {
    let text = serde_json::from_slice::<wire::ErrorResponse>(body)
        .ok()
        .map(|e| e.error.message)
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    // Very short values (say a one-letter user name) would blank ordinary words.
    let redactor = Redactor::new(
        secrets.iter().map(String::as_str).filter(|s| s.len() >= 4),
        std::iter::empty(),
    );
    let scrubbed: String = redactor
        .scrub(&text)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    Redactor::default().one_line(&scrubbed, MAX_MESSAGE_CHARS)
}

/// What a registry authorization could show up as in an echo: the header value, its token and,
/// for Basic, the decoded `user:password` and password.
pub(super) fn registry_secrets(auth: &RegistryAuthorization) -> Vec<String> {
    let value = auth.as_secret().expose();
    let mut out = vec![value.to_owned()];
    if let Some((scheme, token)) = value.split_once(' ') {
        out.push(token.to_owned());
        if scheme.eq_ignore_ascii_case("basic")
            && let Some(decoded) = STANDARD
                .decode(token)
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
        {
            if let Some((user, password)) = decoded.split_once(':') {
                // The account name tells another tenant whose registry this is.
                out.push(user.to_owned());
                out.push(password.to_owned());
            }
            out.push(decoded);
        }
    }
    out
}
